"""The browser's end of the forward: ``127.0.0.1:PORT``, owned by the supervisor.

Why not let ssh listen on the port: a connection accepted on a ``-L`` listener gets
TCP_NODELAY only when the forward's target is not a Unix socket (openssh channels.c,
``c->host_port != PORT_STREAMLOCAL``), and Jupyter's target is one.  Nagle's algorithm
then holds back each burst of small websocket frames (busy, stream, reply, idle) until
the browser's delayed ACK, ~40 ms per cell (benchmarks/README.md).  So the supervisor listens on the
port itself, sets TCP_NODELAY on every connection, and relays the bytes to a private
Unix socket that the ssh master forwards to the server (``-L SOCK:REMOTE``); a Unix
socket has no Nagle.  The listener outlives the master: while the master is rebuilt a
new connection is closed at once (the browser retries, and the health check sees a
refusal, not a timeout), and open tabs keep their port.

One thread per direction of each connection, blocking: it is the simplest relay that
keeps back-pressure (a slow browser slows the server's sends through ssh's window) and
costs little memory (a 64 KiB buffer and a small stack per thread).  splice(2) through
a pipe was tried: on Linux 6 it moved a Unix socket's bytes to TCP at the same CPU cost
per GB as this copy (~0.5 s), so the copy stays, portable.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from pathlib import Path

from jupyter_tether import paths

BUFFER = 64 * 1024  # ssh writes at most 32 KiB per channel packet; two of them per read
MAX_CONNECTIONS = 256  # a Lab tab opens a handful; beyond this something is wrong
STACK = 256 * 1024  # the pumps need little stack; the default is 8 MiB of address space
BACKLOG = 128


def socket_path(name: str) -> Path:
    """The local Unix socket the master forwards for server ``name``.

    In the runtime dir (private, 0700, short): a Unix socket path has ~107 bytes."""
    d = paths.ensure_private_dir(paths.runtime_dir() / "fwd")
    path = d / f"{name}.sock"
    if len(str(path)) > 100:
        path = d / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.sock"
    return path


def listen(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port`` (OSError when the port is taken)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Like ssh's own listeners: a restart finds the port in TIME_WAIT, not busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def serve(listener: socket.socket, upstream: Path) -> threading.Thread:
    """Accept on ``listener`` and relay each connection to ``upstream``, in the background."""
    threading.stack_size(STACK)
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
    thread = threading.Thread(
        target=_accept_loop, args=(listener, upstream, slots), name="relay", daemon=True
    )
    thread.start()
    return thread


def _accept_loop(
    listener: socket.socket, upstream: Path, slots: threading.BoundedSemaphore
) -> None:
    listener.settimeout(None)
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            if listener.fileno() < 0:
                return  # closed: the supervisor is stopping
            continue  # ECONNABORTED, EMFILE...: this one connection is lost, not the port
        if not slots.acquire(blocking=False):
            client.close()
            continue
        try:
            threading.Thread(
                target=_relay, args=(client, upstream, slots), name="relay-conn", daemon=True
            ).start()
        except RuntimeError:  # no thread to be had: drop this connection only
            slots.release()
            client.close()


def _relay(client: socket.socket, upstream: Path, slots: threading.BoundedSemaphore) -> None:
    try:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        far = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            far.connect(str(upstream))
        except OSError:
            # No master right now (being rebuilt): close at once, so that the client
            # (and the supervisor's health check) sees a refusal rather than a hang.
            far.close()
            return
        with far:
            back = threading.Thread(
                target=_pump, args=(far, client), name="relay-back", daemon=True
            )
            back.start()
            _pump(client, far)
            back.join()
    finally:
        client.close()
        slots.release()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until EOF (passed on as a half-close) or an error."""
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    try:
        while True:
            n = src.recv_into(buf)
            if n == 0:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            dst.sendall(view[:n])
    except OSError:
        # A reset on either side ends both directions: wake the other pump too.
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
