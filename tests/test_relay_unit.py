"""The supervisor's relay (relay.py) on real sockets: a TCP client on 127.0.0.1, the relay,
and a real Unix-socket server standing where the ssh master's forward listens."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_tether import relay

BIG = 32 << 20


class UnixServer:
    """Accepts on a Unix socket; each connection gets ``reply(conn)`` in a thread."""

    def __init__(self, path: Path, reply: object) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.reply = reply
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.reply, args=(conn,), daemon=True).start()  # type: ignore[arg-type]

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = relay.listen(0)
    yield sock
    sock.close()


def connect(listener: socket.socket) -> socket.socket:
    return socket.create_connection(listener.getsockname(), timeout=30)


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def accepted_peer_of(client: socket.socket) -> socket.socket:
    """The relay's own end of ``client``'s connection, found among this process's fds."""
    want = client.getsockname()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):
            s = socket.socket(fileno=os.dup(fd))
            try:
                if s.family == socket.AF_INET and s.getpeername() == want:
                    return s
            except OSError:
                pass
            s.close()
    raise AssertionError("the relay's end of the connection is not among the open fds")


def test_accepted_connections_have_tcp_nodelay(tmp_path: Path, listener: socket.socket) -> None:
    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    server = UnixServer(tmp_path / "fwd.sock", echo)
    relay.serve(listener, server.path)
    try:
        with connect(listener) as client:
            client.sendall(b"ping")
            assert client.recv(4) == b"ping"  # the relay has set up the connection
            theirs = accepted_peer_of(client)
            with theirs:
                assert theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            # And the listener's default is off, so the check above can fail.
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    finally:
        server.close()


def test_a_large_download_is_byte_exact_both_ways(tmp_path: Path, listener: socket.socket) -> None:
    payload = os.urandom(BIG)

    def serve_file(conn: socket.socket) -> None:
        with conn:
            # Reads the whole upload first: the relay passes the client's half-close on.
            digest = hashlib.sha256(recv_all(conn)).digest()
            conn.sendall(digest + payload)

    server = UnixServer(tmp_path / "fwd.sock", serve_file)
    relay.serve(listener, server.path)
    upload = os.urandom(BIG // 4)
    try:
        with connect(listener) as client:

            def send() -> None:
                client.sendall(upload)
                client.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send)
            sender.start()
            got = recv_all(client)
            sender.join(30)
    finally:
        server.close()
    assert got[:32] == hashlib.sha256(upload).digest()
    assert len(got) - 32 == len(payload)
    assert got[32:] == payload


def test_no_forward_closes_the_connection_at_once(tmp_path: Path, listener: socket.socket) -> None:
    """While the master is rebuilt its socket is gone: the client gets an end, not a hang,
    and the port keeps listening for the next connection."""
    relay.serve(listener, tmp_path / "absent.sock")
    for _ in range(2):
        with connect(listener) as client:
            client.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                assert client.recv(1) == b""


def test_socket_path_stays_short_enough_for_a_unix_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A short base (pytest's tmp_path alone can be too long for any socket), made long
    # enough that a 64-character server name would not fit.
    base = Path(tempfile.mkdtemp(prefix="tt-relay-"))
    monkeypatch.setenv("JUPYTER_TETHER_RUNTIME_DIR", str(base / ("r" * 30)))
    long_name = "n" * 64
    assert len(str(base / ("r" * 30) / "fwd" / f"{long_name}.sock")) > 100
    path = relay.socket_path(long_name)
    assert len(str(path)) <= 100
    assert path != relay.socket_path("n" * 63)
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    short = relay.socket_path("aura")
    assert short.name == "aura.sock"
    shutil.rmtree(base)
