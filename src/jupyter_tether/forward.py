"""The local end: 127.0.0.1:PORT on the workstation, forwarded through the ssh master."""

from __future__ import annotations

import os
import socket

from jupyter_tether import ssh
from jupyter_tether.errors import ExitCode, TetherError

ATTEMPTS = 8  # how often to retry when another program grabs the port we picked


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def check_port(port: int) -> None:
    """A port the user asked for: refuse privileged or busy ones with a clear message."""
    if not 1 <= port <= 65535:
        raise TetherError(
            f"port {port} is out of range", hint="use 1024-65535", code=ExitCode.LOCAL_PORT
        )
    if port < 1024 and hasattr(os, "geteuid") and os.geteuid() != 0:
        raise TetherError(
            f"local port {port} is privileged (below 1024)",
            hint="pick a port from 1024 to 65535, or leave --port out to get a free one",
            code=ExitCode.LOCAL_PORT,
        )
    if not port_is_free(port):
        raise TetherError(
            f"local port {port} is busy: another program listens on 127.0.0.1:{port}",
            hint=f"pick another --port, or see what holds it with `ss -ltnp 'sport = :{port}'`",
            code=ExitCode.LOCAL_PORT,
        )


def establish(target: ssh.Target, remote: str, *, want: int | None, fixed: bool) -> int:
    """Forward a local port to ``remote`` and return it.

    ``want`` is tried first (the port of an earlier session, so open tabs keep working);
    with ``fixed`` it is the only acceptable port.  ssh rejects local port 0, so we pick a
    free port ourselves and retry if something takes it between our check and ssh's bind.
    """
    candidates: list[int] = []
    if want is not None:
        candidates.append(want)
    last = ""
    for attempt in range(ATTEMPTS):
        port = candidates[attempt] if attempt < len(candidates) else free_port()
        res = ssh.add_forward(target, port, remote)
        if res.ok:
            return port
        last = ssh.first_meaningful_line(res.stderr)
        if "control socket" in last.lower() or "no such file" in last.lower():
            raise TetherError(
                f"{target.destination}: the ssh connection went away while forwarding",
                hint="run the command again; it reconnects",
                code=ExitCode.SSH_CONNECT,
            )
        if fixed:
            check_port(port)  # explains a busy or privileged port
            raise TetherError(
                f"cannot forward local port {port}: {last or 'ssh refused'}",
                hint="pick another --port",
                code=ExitCode.LOCAL_PORT,
            )
    raise TetherError(
        f"could not find a free local port after {ATTEMPTS} tries ({last})",
        hint="something is grabbing ports on 127.0.0.1; retry, or pass --port",
        code=ExitCode.LOCAL_PORT,
    )
