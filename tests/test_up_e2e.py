"""`tether up` end to end: a real sshd, a real JupyterLab, real tmux, a real kernel."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_tether import jupyter_api, state
from testing.helpers.cli import Tether
from testing.helpers.jupyter import run_in_kernel
from testing.helpers.users import as_user, home_of
from tests.conftest import IS_ROOT, LocalSshd, SandboxTopology
from tests.helpers import remote_procs

pytestmark = pytest.mark.e2e


@pytest.fixture
def served(tether: Tether, sshd: LocalSshd, jupyter_env: Path) -> Iterator[dict[str, Any]]:
    """`tether up tt-server` with the sandbox's JupyterLab; downed afterwards."""
    tether.profile("tt-server", env=str(jupyter_env))
    res = tether("up", "tt-server", "--no-browser", "--json")
    assert res.rc == 0, res.err
    info: dict[str, Any] = json.loads(res.out)
    yield info
    tether("down", "tt-server")


def test_up_serves_jupyterlab_and_runs_a_kernel(tether: Tether, served: dict[str, Any]) -> None:
    assert set(served) >= {"host", "url", "local_port", "pid", "state"}
    assert served["state"] == "running"
    assert served["url"].startswith(f"http://127.0.0.1:{served['local_port']}/lab?token=")
    token = served["url"].split("token=")[1]
    code, body = jupyter_api.request(served["local_port"], "GET", "/api/status", token)
    assert code == 200, body
    # ...and without the token, nothing but /api answers.
    code, _ = jupyter_api.request(served["local_port"], "GET", "/api/status", None)
    assert code == 403
    assert run_in_kernel(served["local_port"], token, "1+1") == "2"


def test_second_up_reuses_the_server(tether: Tether, served: dict[str, Any]) -> None:
    res = tether("up", "tt-server", "--no-browser", "--json")
    assert res.rc == 0, res.err
    again = json.loads(res.out)
    assert again["pid"] == served["pid"]
    assert again["reused"] is True
    assert again["local_port"] == served["local_port"]
    assert again["url"] == served["url"]


def test_ls_reports_the_server(tether: Tether, served: dict[str, Any]) -> None:
    res = tether("ls", "--json")
    assert res.rc == 0, res.err
    rows = json.loads(res.out)
    assert len(rows) == 1
    row = rows[0]
    assert row["host"] == "tt-server"
    assert row["profile"] == "tt-server"
    assert row["state"] == "running"
    assert row["pid"] == served["pid"]
    assert row["uptime"] >= 0
    assert row["kernels"] == 0
    assert row["last_activity"]
    assert row["url"] == f"http://127.0.0.1:{served['local_port']}/"
    table = tether("ls")
    assert "tt-server" in table.out and "running" in table.out


def test_token_never_in_argv_or_readable_files(
    tether: Tether, served: dict[str, Any], sshd: LocalSshd, jupyter_env: Path
) -> None:
    token = served["url"].split("token=")[1]
    run_in_kernel(served["local_port"], token, "1+1")  # kernels too
    args = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert token not in args.stdout
    assert "jupyter" in args.stdout  # the server is there, just not its token
    # Every file under the remote home, /tmp and /var/tmp that holds the token must be
    # unreadable to anyone but the owner.
    for root in (home_of(sshd.user), Path("/tmp"), Path("/var/tmp")):
        for path in root.rglob("*"):
            try:
                if not path.is_file() or path.is_symlink():
                    continue
                if token.encode() not in path.read_bytes():
                    continue
            except OSError:
                continue
            mode = path.stat().st_mode & 0o777
            assert mode & 0o077 == 0, f"{path} holds the token and is {oct(mode)}"


@pytest.mark.skipif(not IS_ROOT, reason="needs a second account")
def test_other_user_cannot_reach_the_socket(served: dict[str, Any], sshd: LocalSshd) -> None:
    rec = state.load("tt-server")
    assert rec is not None
    sock = Path(rec.remote)
    assert sock.is_socket()
    assert sock.parent.stat().st_mode & 0o777 == 0o700
    assert sock.parent.stat().st_uid == home_of(sshd.user).stat().st_uid
    assert sshd.other_user is not None
    probe = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX)\n"
        f"try:\n s.connect({str(sock)!r})\nexcept OSError as e:\n print(type(e).__name__)\n"
        "else:\n print('CONNECTED')\n"
    )
    res = as_user(sshd.other_user, ["/usr/bin/python3", "-c", probe])
    assert res.stdout.strip() == "PermissionError", res.stdout + res.stderr


def test_down_leaves_nothing_behind(tether: Tether, sshd: LocalSshd, jupyter_env: Path) -> None:
    tether.profile("tt-server", env=str(jupyter_env))
    res = tether("up", "tt-server", "--no-browser", "--json")
    assert res.rc == 0, res.err
    info = json.loads(res.out)
    rec = state.load("tt-server")
    assert rec is not None
    sock = Path(rec.remote)
    assert sock.exists()
    res = tether("down", "tt-server")
    assert res.rc == 0, res.err
    assert not remote_procs(sshd.user, "jupyter"), "a jupyter process survived down"
    assert not remote_procs(sshd.user, "tmux"), "a tmux server survived down"
    assert not sock.exists() and not sock.parent.exists()
    remote_state = home_of(sshd.user) / ".local/state/jupyter-tether/servers/tt-server"
    assert not remote_state.exists()
    assert state.load("tt-server") is None
    # and the forward is gone
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", info["local_port"]), timeout=2).close()


@pytest.mark.netns
def test_up_through_a_jump_host(
    tether: Tether, topology: SandboxTopology, jupyter_env: Path
) -> None:
    # The far server is only reachable through the jump host.
    with pytest.raises(OSError):
        socket.create_connection((topology.far.address, topology.far.port), timeout=2)
    tether.profile("tt-far", env=str(jupyter_env))
    res = tether("up", "tt-far", "--no-browser", "--json")
    assert res.rc == 0, res.err
    try:
        info = json.loads(res.out)
        token = info["url"].split("token=")[1]
        assert run_in_kernel(info["local_port"], token, "print(6*7)") == "42"
    finally:
        assert tether("down", "tt-far").rc == 0
