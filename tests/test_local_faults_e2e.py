"""Faults on the workstation side, against a real sshd and Jupyter: local processes killed
with SIGKILL (a crash, or a reboot that keeps the state files), and the state directory
on a full file system. SECURITY.md's robustness section lists these cases."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_tether import jupyter_api, state, supervisor
from jupyter_tether.proc import pid_alive
from testing.helpers.cli import Tether
from testing.helpers.jupyter import new_kernel, run_on
from tests.conftest import IS_ROOT, LocalSshd
from tests.helpers import kill_supervisors, remote_procs

pytestmark = pytest.mark.e2e

NAME = "tt-server"


def up_json(tether: Tether, name: str) -> dict[str, object]:
    res = tether("up", name, "--no-browser", "--json")
    assert res.rc == 0, res.err
    data: dict[str, object] = json.loads(res.out)
    return data


def master_pids(runtime: Path) -> list[int]:
    """The pids of the ssh ControlMasters whose sockets are in ``runtime``/cm."""
    pids = []
    for sock in (runtime / "cm").glob("*"):
        if not sock.is_socket():
            continue
        res = subprocess.run(
            ["ssh", "-o", f"ControlPath={sock}", "-O", "check", "placeholder"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        m = re.search(r"pid=(\d+)", res.stderr)
        if m:
            pids.append(int(m.group(1)))
    return pids


def sigkill(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(p) for p in pids)


def ls_row(tether: Tether, name: str) -> dict[str, object]:
    res = tether("ls", "--json")
    assert res.rc == 0, res.err
    rows = [r for r in json.loads(res.out) if r["name"] == name]
    assert len(rows) == 1, res.out
    row: dict[str, object] = rows[0]
    return row


@pytest.fixture
def down_after(tether: Tether) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        tether("down", name)


@pytest.mark.parametrize("killed", ["supervisor", "master", "both"])
def test_open_after_local_processes_are_killed(
    tether: Tether,
    sshd: LocalSshd,
    jupyter_env: Path,
    down_after: list[str],
    killed: str,
) -> None:
    """SIGKILL of the supervisor, of the ssh master, or of both (what a workstation reboot
    leaves: the state files and nothing else): `tether open` gives back the same URL, and
    the kernel still has its variables."""
    tether.profile(NAME, env=str(jupyter_env))
    down_after.append(NAME)
    info = up_json(tether, NAME)
    port, token = int(str(info["local_port"])), str(info["url"]).split("token=")[1]
    kernel = new_kernel(port, token)
    assert run_on(port, token, kernel, "x = 6 * 7; print(x)").strip() == "42"
    status = supervisor.read_status(NAME)
    assert status is not None
    runtime = Path(os.environ["JUPYTER_TETHER_RUNTIME_DIR"])

    victims = []
    if killed in ("supervisor", "both"):
        victims.append(int(status["pid"]))
    if killed in ("master", "both"):
        masters = master_pids(runtime)
        assert masters, "no ssh master to kill"
        victims += masters
    sigkill(victims)

    row = ls_row(tether, NAME)
    if killed == "supervisor":
        # The ssh link is fine, but the port was the supervisor's (its relay): the server
        # runs, unforwarded, and nobody watches it any more; ls says so.
        assert row["state"] == "running (not forwarded)", row
        tunnel = row["tunnel"]
        assert isinstance(tunnel, dict) and tunnel["state"] == "none", row
    elif killed == "both":
        assert row["state"] == "disconnected", row
        assert jupyter_api.status(port, token, timeout=2) is None

    res = tether("open", NAME, "--no-browser", "--json")
    assert res.rc == 0, res.err
    again = json.loads(res.out)
    assert again["local_port"] == port
    assert again["url"] == info["url"]
    assert run_on(port, token, kernel, "print(x)").strip() == "42"
    assert up_json(tether, NAME)["pid"] == info["pid"]  # never restarted
    after = supervisor.read_status(NAME)
    assert after is not None and pid_alive(int(after["pid"]))
    assert ls_row(tether, NAME)["state"] == "running"


@pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root")
def test_full_state_directory_gives_a_clear_error_and_keeps_the_old_files(
    tether: Tether,
    sshd: LocalSshd,
    jupyter_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full = tmp_path / "small"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], check=True)
    monkeypatch.setenv("JUPYTER_TETHER_STATE_DIR", str(full))
    tether.profile(NAME, env=str(jupyter_env))
    tether.profile("tt-second", ssh=NAME, env=str(jupyter_env))
    try:
        first = up_json(tether, NAME)
        record = state.path_for(NAME)
        before = record.read_bytes()

        # Fill the file system to the last byte.
        with contextlib.suppress(OSError), open(full / "filler", "wb", buffering=0) as f:
            for _ in range(4096):  # 1 MiB in 4 KiB blocks, with room to spare
                f.write(b"\0" * 4096)
        with pytest.raises(OSError):
            (full / "probe").write_bytes(b"\0" * 65536)

        res = tether("up", "tt-second", "--no-browser")
        assert res.rc == 1, res.err
        assert "No space left on device" in res.err
        assert "hint:" in res.err and "Traceback" not in res.err
        # Nothing half-done: the first record is whole, no temporary files are left, and
        # no second server runs on the account.
        assert record.read_bytes() == before
        assert state.load(NAME) is not None
        assert not list(full.rglob("*.tmp"))
        assert state.load("tt-second") is None
        assert len(remote_procs(sshd.user, "jupyter-lab")) == 1
        # The first server's tunnel keeps working on the full disk.
        token = str(first["url"]).split("token=")[1]
        assert jupyter_api.status(int(str(first["local_port"])), token) is not None

        (full / "filler").unlink()
        (full / "probe").unlink(missing_ok=True)
        second = up_json(tether, "tt-second")  # with room again, it works
        assert state.load("tt-second") is not None
        assert second["local_port"] != first["local_port"]
    finally:
        for name in (NAME, "tt-second"):
            tether("down", name)
        kill_supervisors(full)
        subprocess.run(["umount", "-l", str(full)], check=False)
