"""`tether doctor HOST`: what the server has and lacks for tether, each with a fix."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jupyter_tether import config, forward, nagle, output, probe, ssh
from jupyter_tether.commands._common import connected, env_prefix
from jupyter_tether.errors import ExitCode
from jupyter_tether.provision import builder_calls, keep_outputs

_MODULE_FIX = {
    "ssl": "HTTPS downloads and Jupyter's TLS need it: rebuild Python with OpenSSL headers",
    "zlib": "wheels are zip files: rebuild Python with zlib headers",
    "ctypes": "many packages need it: rebuild Python with libffi headers",
    "sqlite3": "Jupyter keeps its session and history stores in it: rebuild Python with "
    "sqlite3 headers",
}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def doctor(name: str, *, ssh_config: Path | None = None, as_json: bool = False) -> int:
    profile = config.resolve(name)
    progress = output.Progress(quiet=True)
    with connected(profile, ssh_config, progress) as (target, found):
        facts = builder_calls.doctor(target, found, profile)
        checks = _checks(profile, found, facts)
        if profile.keep_outputs:
            checks.append(_keep_outputs(target, found, profile))
        checks.append(_forwarding(target, found))
        checks.extend(nagle_checks(nagle.read_versions(target.destination, target.config_file)))
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        output.emit_json(
            {"host": profile.ssh, "ok": not failed, "checks": [asdict(c) for c in checks]}
        )
    else:
        for c in checks:
            print(f"{c.status:<5} {c.name:<11} {c.detail}")
            if c.fix and c.status != "ok":
                print(f"{'':17}fix: {c.fix}")
    return ExitCode.REMOTE_ENV if failed else ExitCode.OK


def _checks(profile: config.Profile, found: probe.Probe, facts: Mapping[str, Any]) -> list[Check]:
    checks = []
    python = facts.get("python")
    if python:
        version = ".".join(map(str, python["version"]))
        checks.append(Check("python", "ok", f"{version} at {python['path']} ({python['how']})"))
        modules = (facts.get("python_facts") or {}).get("modules", {})
        for mod, fix in _MODULE_FIX.items():
            problem = modules.get(mod, "not checked")
            if problem:
                checks.append(Check(mod, "fail", f"{python['path']}: {problem}", fix))
            else:
                checks.append(Check(mod, "ok", "importable"))
    else:
        tried = "; ".join(facts.get("tried") or []) or "nothing found"
        checks.append(
            Check(
                "python",
                "fail",
                f"no usable Python >= 3.9 ({tried})",
                'install python3 >= 3.9, or set python = "/path/to/python3" or '
                '"module:NAME" in the profile',
            )
        )
    checks.append(_glibc(found.glibc))
    free = int(facts.get("free_mb") or 0)
    where = facts.get("data_dir", "~/.local/share/jupyter-tether")
    need = builder_calls.MIN_FREE_MB
    if free < need:
        checks.append(
            Check(
                "disk",
                "fail",
                f"{free} MB free in {where}; an environment needs about {need} MB",
                "free some space, or ask for more quota",
            )
        )
    else:
        checks.append(Check("disk", "ok", f"{free} MB free in {where}"))
    quota = facts.get("quota")
    if quota and quota.get("text"):
        checks.append(Check("quota", "fail", quota["text"], "remove files or ask for more quota"))
    elif quota:
        checks.append(Check("quota", "ok", "under every limit"))
    if found.has("tmux"):
        checks.append(Check("tmux", "ok", found.tools["tmux"]))
    elif found.has("screen"):
        checks.append(
            Check(
                "tmux",
                "warn",
                "no tmux; screen will keep Jupyter running",
                "install tmux for `tether attach` with scrollback",
            )
        )
    else:
        checks.append(
            Check(
                "tmux",
                "warn",
                "neither tmux nor screen: Jupyter runs under setsid",
                "install tmux to be able to `tether attach`",
            )
        )
    checks.append(_module_system(profile, found, facts))
    index = facts.get("index") or {}
    if index.get("reachable"):
        checks.append(Check("index", "ok", "the package index is reachable from the server"))
    else:
        checks.append(
            Check(
                "index",
                "warn",
                f"the server cannot reach the package index ({index.get('detail')})",
                "nothing to do: tether downloads wheels here and copies them over",
            )
        )
    return checks


def _glibc(glibc: str | None) -> Check:
    if not glibc:
        return Check(
            "glibc",
            "warn",
            "no glibc (musl?): manylinux wheels will not run",
            "prefer a glibc-based system, or packages with musllinux wheels",
        )
    major, minor = (int(x) for x in glibc.split(".")[:2])
    if (major, minor) < (2, 17):
        return Check(
            "glibc",
            "warn",
            f"glibc {glibc} is older than manylinux2014 (2.17)",
            "many binary wheels will not install; use a newer system or build_from_source",
        )
    return Check("glibc", "ok", glibc)


def _module_system(profile: config.Profile, found: probe.Probe, facts: Mapping[str, Any]) -> Check:
    kind = "Lmod" if found.lmod else "Environment Modules"
    if not profile.modules:
        if found.module_init:
            return Check("modules", "ok", f"{kind} at {found.module_init} (none requested)")
        return Check("modules", "ok", "no module system (none requested)")
    if not found.module_init:
        return Check(
            "modules",
            "fail",
            f"modules {', '.join(profile.modules)} requested, but the server has no module system",
            "remove `modules` from the profile",
        )
    result = facts.get("modules") or {}
    if not result.get("ok"):
        return Check(
            "modules",
            "fail",
            f"`module load {' '.join(profile.modules)}` failed: {result.get('text')}",
            "check the names with `module avail` on the server",
        )
    return Check("modules", "ok", f"{kind}: {' '.join(profile.modules)} load")


def _keep_outputs(target: ssh.Target, found: probe.Probe, profile: config.Profile) -> Check:
    """keep_outputs: the environment ``up`` uses has the tested set and nothing that runs
    cells another way. A managed one not built yet gets it on the next `up`."""
    prefix = env_prefix(profile, found)
    info = builder_calls.describe(target, found, prefix)
    if not info["exists"]:
        if profile.env:
            return Check("outputs", "fail", f"{prefix} does not exist", "fix `env` in the profile")
        return Check("outputs", "ok", "tether installs the tested set at the next `up`")
    got = keep_outputs.check(info.get("packages") or [])
    if got.tested:
        return Check("outputs", "ok", f"{prefix} has the tested set ({keep_outputs.EXECUTOR})")
    fixes = []
    if got.conflicts:
        fixes.append(keep_outputs.uninstall_line(prefix, got.conflicts))
    if got.missing or got.other_versions:
        fixes.append(keep_outputs.pip_line(prefix))
    lacks = [*got.missing, *got.other_versions]
    detail = f"{prefix}: " + "; ".join(
        part
        for part in (
            f"lacks {', '.join(lacks)}" if lacks else "",
            f"has {', '.join(got.conflicts)} (runs cells its own way)" if got.conflicts else "",
        )
        if part
    )
    return Check("outputs", "warn" if got.works else "fail", detail, " && ".join(fixes))


def nagle_checks(versions: nagle.Versions) -> list[Check]:
    """One check per TCP hop: whether OpenSSH can keep Nagle stalls off it."""
    names = {"workstation-server": "nagle", "workstation-jump": "nagle-jump"}
    return [
        Check(
            names.get(hop.name, "nagle-far"),
            "ok" if hop.ok else "warn",
            f"{hop.name} hop: {hop.detail}",
            hop.fix,
        )
        for hop in nagle.hops(versions)
    ]


def _forwarding(target: ssh.Target, found: probe.Probe) -> Check:
    """Forward a local port to a throwaway socket on the server and read its greeting."""
    listener = builder_calls.listen(target, found)
    port = forward.free_port()
    ssh.add_forward(target, port, listener["sock"])
    got = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.settimeout(10)
            got = conn.recv(64)
    except OSError:
        pass
    finally:
        ssh.cancel_forward(target, port, listener["sock"])
    if got.startswith(b"tether-ok"):
        return Check("forwarding", "ok", "sshd forwards to Unix sockets")
    return Check(
        "forwarding",
        "warn",
        "sshd refuses to forward to Unix sockets: tether falls back to TCP on the "
        "server's 127.0.0.1, which other users of the server can reach",
        "ask the admin for `AllowStreamLocalForwarding yes` in sshd_config",
    )
