"""The supervisor's relay in front of the real forward (relay.py): it owns 127.0.0.1:PORT,
carries a large download byte for byte, and keeps the port while the ssh master is
killed and rebuilt under it."""

from __future__ import annotations

import ctypes
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_tether import jupyter_api, relay, supervisor
from testing.helpers.cli import Tether
from testing.helpers.jupyter import new_kernel, run_on
from tests.conftest import IS_ROOT, LocalSshd
from tests.test_local_faults_e2e import master_pids, sigkill

pytestmark = pytest.mark.e2e

PIDFD_GETFD = 438  # the syscall's number, the same on every Linux architecture
NAME = "tt-server"  # the sandbox sshd's host alias
MEGABYTES = 48


@pytest.fixture
def server(tether: Tether, sshd: LocalSshd, jupyter_env: Path) -> Iterator[dict[str, object]]:
    tether.profile(NAME, env=str(jupyter_env))
    res = tether("up", NAME, "--no-browser", "--json")
    assert res.rc == 0, res.err
    info: dict[str, object] = json.loads(res.out)
    info["token"] = str(info["url"]).split("token=")[1]
    try:
        yield info
    finally:
        tether("down", NAME)


def listeners(port: int) -> list[tuple[str, int]]:
    """(address, pid) of every TCP listener on ``port`` (``ss -ltnp``)."""
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        for pid in re.findall(r"pid=(\d+)", line):
            found.append((line.split()[3], int(pid)))
    return found


def _pidfd_getfd(pid: int, fd: int) -> socket.socket:
    """A copy of another process's socket (pidfd_getfd(2), Linux >= 5.6, as root)."""
    pidfd = os.pidfd_open(pid)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        got = libc.syscall(PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
    finally:
        os.close(pidfd)
    return socket.socket(fileno=got)


def sshd_end_of(master: int) -> socket.socket:
    """The server's end of the ssh master's TCP connection, taken from sshd."""
    rows = subprocess.run(
        ["ss", "-tnpH", "state", "established"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    ends = [r.split() for r in rows if f"pid={master}," in r]
    assert ends, "the master has no TCP connection"
    local, peer = ends[0][2], ends[0][3]
    for row in rows:
        cols = row.split()
        if cols[2] == peer and cols[3] == local:
            m = re.search(r'"sshd[^"]*",pid=(\d+),fd=(\d+)', row)
            if m:
                return _pidfd_getfd(int(m.group(1)), int(m.group(2)))
    raise AssertionError(f"no sshd holds the other end of {local} -> {peer}")


def supervisor_pid() -> int:
    status = supervisor.read_status(NAME)
    assert status is not None, "no supervisor runs"
    return int(status["pid"])


def test_the_port_is_the_supervisors_and_a_large_download_is_byte_exact(
    server: dict[str, object],
) -> None:
    port, token = int(str(server["local_port"])), str(server["token"])
    assert listeners(port) == [(f"127.0.0.1:{port}", supervisor_pid())]
    assert relay.socket_path(NAME).is_socket()  # the master's end of the forward
    kernel = new_kernel(port, token)
    made = run_on(
        port,
        token,
        kernel,
        "import hashlib, os\n"
        f"data = os.urandom({MEGABYTES << 20})\n"
        "open('tt-relay.bin', 'wb').write(data)\n"
        "print(hashlib.sha256(data).hexdigest())",
    ).strip()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/files/tt-relay.bin", headers={"Authorization": f"token {token}"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200
    assert len(body) == MEGABYTES << 20
    assert hashlib.sha256(body).hexdigest() == made


def test_the_port_stays_while_the_master_is_killed_and_rebuilt(
    server: dict[str, object],
) -> None:
    """Without any command: the supervisor rebuilds the master and the forward behind the
    same listener, so an open tab's port never changes hands or stops listening."""
    port, token = int(str(server["local_port"])), str(server["token"])
    kernel = new_kernel(port, token)
    assert run_on(port, token, kernel, "kept = 41; print(kept)").strip() == "41"
    pid = supervisor_pid()
    runtime = Path(os.environ["JUPYTER_TETHER_RUNTIME_DIR"])
    masters = master_pids(runtime)
    assert masters, "no ssh master to kill"
    sigkill(masters)
    # The listener is still there, still the supervisor's, while the master is gone.
    assert listeners(port) == [(f"127.0.0.1:{port}", pid)]
    deadline = time.monotonic() + 30
    while jupyter_api.status(port, token, timeout=1) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert jupyter_api.status(port, token, timeout=5) is not None, "not back within 30 s"
    assert run_on(port, token, kernel, "print(kept + 1)").strip() == "42"
    assert supervisor_pid() == pid
    assert listeners(port) == [(f"127.0.0.1:{port}", pid)]
    rebuilt = master_pids(runtime)
    assert rebuilt and set(rebuilt).isdisjoint(masters)
    if IS_ROOT:
        # The rebuilt master ran no command before the forward: only its pty-first
        # session made sshd set TCP_NODELAY (a forward alone never does).
        assert sshd_sets_nodelay(rebuilt[0])


@pytest.mark.skipif(not IS_ROOT, reason="reading sshd's socket options needs root")
def test_sshd_has_tcp_nodelay_on_the_masters_connection(server: dict[str, object]) -> None:
    """sshd set TCP_NODELAY on the master's connection: without it sshd's replies wait
    for delayed ACKs. (sshd sets it on a connection's first session; the master's is
    one with a pty, which old versions need to count as interactive.)"""
    masters = master_pids(Path(os.environ["JUPYTER_TETHER_RUNTIME_DIR"]))
    assert len(masters) == 1
    assert sshd_sets_nodelay(masters[0])


def sshd_sets_nodelay(master: int, seconds: float = 10) -> bool:
    """Whether sshd's end of ``master``'s connection gets TCP_NODELAY: the first session
    runs in the background of the master's start, so give it a moment (bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        with sshd_end_of(master) as theirs:
            if theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
