"""Local records of servers this workstation started or connected to (0600 JSON files)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jupyter_tether import paths
from jupyter_tether.errors import ExitCode, TetherError


@dataclass(frozen=True)
class Record:
    name: str
    ssh: str
    ssh_config: str | None
    token: str
    local_port: int
    remote: str  # what the forward points at: a socket path or 127.0.0.1:PORT
    app: str
    pid: int
    hostname: str
    started: float
    transport: str = "socket"
    python: str = "python3"  # the interpreter the agent runs under on the server
    rundir: str | None = None  # the server's private run directory
    launcher: str | None = None  # tmux, screen or setsid
    installed: tuple[str, ...] = ()  # packages `tether install` added
    job: dict[str, str | None] | None = None  # a batch job's id, node... (batch.Job)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    @property
    def url(self) -> str:
        path = "/lab" if self.app == "lab" else "/tree"
        return f"{self.base_url}{path}?token={self.token}"


def _dir() -> Path:
    return paths.state_dir() / "servers"


def path_for(name: str) -> Path:
    return _dir() / f"{name}.json"


def save(rec: Record) -> None:
    paths.write_private(path_for(rec.name), json.dumps(asdict(rec), indent=1))


def _from_json(data: dict[str, Any]) -> Record:
    # Records written before these fields were typed kept them in an `extra` table.
    old = data.pop("extra", None) or {}
    for key in ("python", "rundir", "launcher", "installed"):
        if key not in data and old.get(key) is not None:
            data[key] = old[key]
    data["installed"] = tuple(data.get("installed") or ())
    data["python"] = str(data.get("python") or "python3")
    return Record(**data)


def load(name: str) -> Record | None:
    try:
        data = json.loads(path_for(name).read_text(encoding="utf-8"))
        return _from_json(data)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def remove(name: str) -> None:
    path_for(name).unlink(missing_ok=True)


def all_records() -> list[Record]:
    d = _dir()
    if not d.is_dir():
        return []
    out = []
    for f in sorted(d.glob("*.json")):
        rec = load(f.stem)
        if rec is not None:
            out.append(rec)
    return out


def _host_file(ssh: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "._@-" else "_" for c in ssh)
    return paths.state_dir() / "hosts" / f"{safe}.json"


def host_fact(ssh: str, key: str) -> Any:
    """Something learned about a host that saves work next time (None when unknown)."""
    try:
        data = json.loads(_host_file(ssh).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def set_host_fact(ssh: str, key: str, value: Any) -> None:
    path = _host_file(ssh)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data[key] = value
    paths.write_private(path, json.dumps(data))


def lock(
    name: str, *, timeout: float = 300, busy: TetherError | None = None
) -> contextlib.AbstractContextManager[None]:
    """One local `up`/`open`/`down` per server at a time, so concurrent commands agree on
    one record and one local port (the server side has its own lock)."""
    # Not "locks": on a server that is also the workstation (the demo, or `tether up
    # localhost`) the agent's own locks/NAME.lock lives in the same state directory.
    return paths.hold_lock(
        paths.state_dir() / "client-locks" / f"{name}.lock",
        timeout=timeout,
        busy=busy
        or TetherError(
            f"another tether command has been busy with {name!r} for {timeout:.0f} s",
            hint="wait for it to finish (it may be waiting for a password prompt)",
            code=ExitCode.ERROR,
        ),
    )
