"""Local records of servers this workstation started or connected to (0600 JSON files)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jupyter_tether import paths


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
    extra: dict[str, Any] = field(default_factory=dict)

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


def load(name: str) -> Record | None:
    try:
        data = json.loads(path_for(name).read_text(encoding="utf-8"))
        return Record(**data)
    except (OSError, ValueError, TypeError):
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
