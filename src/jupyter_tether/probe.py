"""What the server is like: one ``sh -s`` round trip, parsed into a frozen record."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from jupyter_tether import remote, ssh
from jupyter_tether.errors import ExitCode, TetherError


@dataclass(frozen=True)
class Python:
    path: str
    version: tuple[int, ...]

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))


@dataclass(frozen=True)
class Probe:
    hostname: str
    os: str
    arch: str
    uid: int
    user: str
    home: str
    glibc: str | None
    home_free_kb: int | None
    xdg_runtime_dir: str | None
    linger: bool
    login_path: str
    module_init: str | None
    lmod: bool
    tools: dict[str, str] = field(default_factory=dict)
    pythons: tuple[Python, ...] = ()
    jupyter: str | None = None
    jupyter_shebang: str | None = None
    servers: tuple[dict[str, Any], ...] = ()
    tether_data: str | None = None  # ~/.local/share/jupyter-tether (or XDG_DATA_HOME's)
    tether_uv: str | None = None  # "PATH VERSION" of tether's own uv on the server
    tether_envs: tuple[str, ...] = ()  # complete managed environments (directory names)
    slurm_conf: str | None = None  # the Slurm configuration the login shell's clients read

    @property
    def scheduler(self) -> str | None:
        """The batch scheduler this host submits to, if it is a cluster's login node."""
        return "slurm" if self.has("sbatch") and self.slurm_conf else None

    def has(self, tool: str) -> bool:
        return bool(self.tools.get(tool))

    def best_python(self, minimum: tuple[int, int] = (3, 8)) -> Python | None:
        ok = [p for p in self.pythons if p.version[:2] >= minimum]
        return max(ok, key=lambda p: p.version) if ok else None

    def jupyter_python(self) -> str | None:
        """The interpreter the login-PATH ``jupyter`` runs under (its shebang)."""
        if not self.jupyter:
            return None
        line = (self.jupyter_shebang or "").strip()
        if line.startswith("#!"):
            parts = line[2:].split()
            if parts and parts[0].endswith("/env") and len(parts) > 1:
                name = parts[1]
                for p in self.pythons:
                    if p.path.rsplit("/", 1)[-1] == name:
                        return p.path
            elif parts and "python" in parts[0].rsplit("/", 1)[-1]:
                return parts[0]
        return self.jupyter.rsplit("/", 1)[0] + "/python"


def parse(stdout: str) -> Probe:
    facts: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if not line.startswith("@@T "):
            continue
        key, _, value = line[4:].partition("=")
        facts.setdefault(key, []).append(value)

    def one(key: str) -> str:
        return facts.get(key, [""])[-1]

    if one("done") != "1":
        raise ValueError("probe output incomplete")
    pythons = []
    seen = set()
    for entry in facts.get("python", []):
        path, _, ver = entry.rpartition(" ")
        if path and path not in seen:
            seen.add(path)
            try:
                pythons.append(Python(path, tuple(int(x) for x in ver.split("."))))
            except ValueError:
                continue
    servers = []
    for raw in facts.get("server", []):
        try:
            servers.append(json.loads(raw))
        except ValueError:
            continue
    free = one("home_free_kb")
    return Probe(
        hostname=one("hostname"),
        os=one("os"),
        arch=one("arch"),
        uid=int(one("uid") or -1),
        user=one("user"),
        home=one("home"),
        glibc=one("glibc") or None,
        home_free_kb=int(free) if free.isdigit() else None,
        xdg_runtime_dir=one("xdg_runtime_dir") or None,
        linger=one("linger") == "yes",
        login_path=one("login_path"),
        module_init=one("module_init") or None,
        lmod=one("lmod") == "yes",
        tools={k[5:]: v[-1] for k, v in facts.items() if k.startswith("tool_") and v[-1]},
        pythons=tuple(pythons),
        jupyter=one("jupyter") or None,
        jupyter_shebang=one("jupyter_shebang") or None,
        servers=tuple(servers),
        tether_data=one("tether_data") or None,
        tether_uv=one("tether_uv") or None,
        tether_envs=tuple(facts.get("tether_env", [])),
        slurm_conf=one("slurm_conf") or None,
    )


def probe(target: ssh.Target) -> Probe:
    res = ssh.run_script(target, remote.probe_script(), timeout=60)
    try:
        return parse(res.stdout)
    except ValueError:
        detail = ssh.first_meaningful_line(res.stderr) or f"exit status {res.returncode}"
        if res.returncode == 255:  # ssh's own failure after part of the output: not sh's
            raise TetherError(
                f"{target.destination}: the connection dropped during the server probe ({detail})",
                hint=f"run `tether up` again; if it keeps happening, try `ssh "
                f"{target.destination}` by hand: the server may end sessions early "
                "(a login limit, a login rc file that exits)",
                code=ExitCode.SSH_CONNECT,
            ) from None
        raise TetherError(
            f"{target.destination}: the server probe failed ({detail})",
            hint="the server needs a POSIX sh; the connection may also have dropped mid-probe",
            code=ExitCode.REMOTE_ENV,
            details=res.stderr.strip()[-2000:] or None,
        ) from None
