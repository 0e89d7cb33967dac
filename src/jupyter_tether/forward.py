"""The local end: 127.0.0.1:PORT on the workstation, forwarded through the ssh master."""

from __future__ import annotations

import os
import socket

from jupyter_tether import relay, ssh, supervisor
from jupyter_tether.errors import ExitCode, TetherError


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


def establish(
    target: ssh.Target, name: str, remote: str, *, want: int | None, fixed: bool
) -> tuple[int, bool]:
    """Forward a local port to ``remote``; return it, and whether a supervisor was started.

    The master forwards the relay's private Unix socket to ``remote``; the supervisor
    listens on the port and relays to it (relay.py says why).  ``want`` is tried first
    (the port of an earlier session, so open tabs keep working); with ``fixed`` it is the
    only acceptable port.  A supervisor already listening on ``want`` keeps it.
    """
    res = ssh.add_forward(target, relay.socket_path(name), remote)
    if not res.ok:
        last = ssh.first_meaningful_line(res.stderr)
        if "control socket" in last.lower() or "no such file" in last.lower():
            raise TetherError(
                f"{target.destination}: the ssh connection went away while forwarding",
                hint="run the command again; it reconnects",
                code=ExitCode.SSH_CONNECT,
            )
        raise TetherError(
            f"cannot forward to {remote} on {target.destination}: {last or 'ssh refused'}",
            hint="`tether doctor` checks that the server's sshd allows forwarding",
            code=ExitCode.SSH_CONNECT,
        )
    current = supervisor.read_status(name)
    if current is not None and want is not None and current.get("port") == want:
        return want, False
    if current is not None:
        supervisor.stop(name)  # it listens on another port, for an older session
    listener = _listen(want, fixed)
    port = int(listener.getsockname()[1])
    try:
        supervisor.start(name, listener)
    finally:
        listener.close()  # the supervisor has its own copy now
    return port, True


def _listen(want: int | None, fixed: bool) -> socket.socket:
    """A socket listening on ``want`` or, unless ``fixed``, on some free port."""
    for port in [want] if want is not None else []:
        try:
            return relay.listen(port)
        except OSError as exc:
            if fixed:
                check_port(port)  # explains a busy or privileged port
                raise TetherError(
                    f"cannot listen on local port {port}: {exc.strerror}",
                    hint="pick another --port",
                    code=ExitCode.LOCAL_PORT,
                ) from None
    try:
        return relay.listen(0)
    except OSError as exc:
        raise TetherError(
            f"cannot listen on any local port: {exc.strerror}",
            hint="something is wrong with 127.0.0.1 on this workstation; retry",
            code=ExitCode.LOCAL_PORT,
        ) from None
