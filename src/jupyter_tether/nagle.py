"""Which TCP hops of a connection can avoid Nagle stalls, given the OpenSSH versions.

OpenSSH turns TCP_NODELAY on (packet.c ``ssh_packet_set_interactive``) only once a
connection is interactive. Before OpenSSH 10.1 that takes a session with a pty: tether
opens one on its master (ssh.py), which covers the workstation -- server hop. Through a
jump host the workstation's ``ssh -W`` talks to the jump's sshd over a connection with
no pty, so before 10.1 neither end of that hop sets TCP_NODELAY; from 10.1 each end
sets it on its own when no channel carries bulk data (openssh-portable commit
289239046). The jump's sshd connects on to the server with TCP_NODELAY in every version
(channels.c, direct-tcpip). README, "Jump hosts and Nagle".
"""

from __future__ import annotations

import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

from jupyter_tether import proc
from jupyter_tether.errors import TetherError

FIXED = (10, 1)
Version = tuple[int, int]
_VERSION_RE = re.compile(r"OpenSSH_(?:for_Windows_)?(\d+)\.(\d+)")


@dataclass(frozen=True)
class Versions:
    """OpenSSH versions: the workstation's client and the jump host's sshd (None: not
    read). ``has_jump`` False: no jump host at all. The server's sshd needs no version:
    tether's pty session turns it interactive in every version."""

    local: Version | None
    jump: Version | None = None
    has_jump: bool = True


@dataclass(frozen=True)
class Hop:
    name: str
    ok: bool | None  # None: a version could not be read
    detail: str
    fix: str = ""


def parse_version(text: str) -> Version | None:
    """(major, minor) from ``ssh -V`` output or an sshd banner, None if not OpenSSH."""
    m = _VERSION_RE.search(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def show(version: Version | None) -> str:
    return f"OpenSSH {version[0]}.{version[1]}" if version else "an unknown OpenSSH"


def hops(v: Versions) -> list[Hop]:
    """The verdict for each TCP hop of a tether connection (with its pty session)."""
    if not v.has_jump:
        return [
            Hop(
                "workstation-server",
                True,
                "tether's pty session turns TCP_NODELAY on at both ends (any version)",
            )
        ]
    ends = [
        ("workstation's ssh -W", v.local, "the workstation"),
        ("jump's sshd", v.jump, "the jump host"),
    ]
    unknown = [who for who, ver, _ in ends if ver is None]
    old = [(who, ver, where) for who, ver, where in ends if ver is not None and ver < FIXED]
    if old:
        said = ", ".join(f"{who}: {show(ver)}" for who, ver, _ in old)
        where = " and ".join(w for _, _, w in old)
        outer = Hop(
            "workstation-jump",
            False,
            f"Nagle stays on ({said}; no pty on the ssh -W connection before 10.1): "
            "small replies can wait for a delayed ACK",
            f"OpenSSH >= {FIXED[0]}.{FIXED[1]} on {where} sets TCP_NODELAY there",
        )
    elif unknown:
        outer = Hop(
            "workstation-jump",
            None,
            f"could not read the version of the {' and '.join(unknown)}",
            f"OpenSSH >= {FIXED[0]}.{FIXED[1]} on both ends avoids Nagle stalls on this hop",
        )
    else:
        outer = Hop("workstation-jump", True, "both ends are OpenSSH >= 10.1: TCP_NODELAY set")
    inner = Hop(
        "jump-server",
        True,
        "the jump's onward connect sets TCP_NODELAY; tether's pty session sets it on the server",
    )
    return [outer, inner]


def summary(v: Versions) -> str:
    """One short line: the versions, and each hop's verdict with its fix."""
    parts = []
    for hop in hops(v):
        if hop.ok:
            parts.append(f"{hop.name} hop ok")
        else:
            state = "may stall" if hop.ok is False else "unknown"
            parts.append(f"{hop.name} hop {state} ({hop.fix})")
    return f"local {show(v.local)}, jump sshd {show(v.jump)}: " + "; ".join(parts)


# ---------------------------------------------------------------------- reading versions


def local_version() -> Version | None:
    """The workstation's OpenSSH, from ``ssh -V`` (it prints to stderr)."""
    try:
        res = proc.run(["ssh", "-V"], timeout=10, stdin_devnull=True)
    except TetherError:  # a missing ssh is reported by every other step already
        return None
    return parse_version(res.stderr + res.stdout)


def banner_version(host: str, port: int, *, timeout: float = 3.0) -> Version | None:
    """An sshd's version from its banner (``SSH-2.0-OpenSSH_9.2p1 ...``), None if not read."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            return parse_version(conn.recv(256).decode("ascii", "replace"))
    except (OSError, UnicodeError):
        return None


def jump_of(settings: dict[str, str]) -> str | None:
    """The first jump host in ``ssh -G`` output (ProxyJump, or ProxyCommand ``ssh -W``)."""
    jump = settings.get("proxyjump", "none")
    if jump != "none":
        return jump.split(",")[0]
    command = settings.get("proxycommand", "none")
    if command == "none":
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if not words or Path(words[0]).name != "ssh" or "-W" not in words:
        return None
    return words[-1]


def ssh_settings(destination: str, config_file: Path | None) -> dict[str, str]:
    """What ssh will really do for ``destination`` (``ssh -G``), as lowercase keys."""
    argv = ["ssh", *(["-F", str(config_file)] if config_file else []), "-G", "--", destination]
    res = proc.run(argv, timeout=10, stdin_devnull=True)
    settings: dict[str, str] = {}
    if res.ok:
        for line in res.stdout.splitlines():
            key, _, value = line.partition(" ")
            settings.setdefault(key.lower(), value)
    return settings


def read_versions(destination: str, config_file: Path | None) -> Versions:
    """The versions :func:`hops` needs, each None where it could not be read cheaply."""
    local = local_version()
    jump = jump_of(ssh_settings(destination, config_file))
    if jump is None:
        return Versions(local=local, has_jump=False)
    alias = jump.rpartition("@")[2]
    if alias.count(":") == 1:  # host:port in ProxyJump
        alias = alias.partition(":")[0]
    where = ssh_settings(alias, config_file)
    host, port = where.get("hostname"), where.get("port", "22")
    # Reachable only when the jump host is the first hop (it is: it is the first jump).
    version = banner_version(host, int(port)) if host and port.isdigit() else None
    return Versions(local=local, jump=version)
