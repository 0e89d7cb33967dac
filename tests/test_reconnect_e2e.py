"""Always connected (README): link cuts in a real namespace topology, a Jupyter killed
with -9, a crash loop, a simulated reboot with the autostart hook."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_tether import jupyter_api, state, supervisor
from testing.helpers.cli import Tether
from testing.helpers.jupyter import new_kernel, run_on
from testing.helpers.users import as_user, home_of
from tests.conftest import IS_ROOT, SandboxTopology
from tests.helpers import remote_procs

pytestmark = [pytest.mark.e2e, pytest.mark.netns]


def wait_answer(port: int, token: str, seconds: float) -> float | None:
    """Seconds until GET /api/status answers through the forward, or None."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if jupyter_api.status(port, token, timeout=0.5) is not None:
            return time.monotonic() - start
        time.sleep(0.02)
    return None


@pytest.fixture
def far(tether: Tether, topology: SandboxTopology, jupyter_env: Path) -> Iterator[dict[str, Any]]:
    """A server on the far host, reached through the jump host, with its supervisor."""
    tether.profile("tt-far", env=str(jupyter_env))
    res = tether("up", "tt-far", "--no-browser", "--json")
    assert res.rc == 0, res.err
    info: dict[str, Any] = json.loads(res.out)
    info["token"] = info["url"].split("token=")[1]
    assert info["supervisor"] > 0
    try:
        yield info
    finally:
        topology.topology.restore()
        tether("down", "tt-far", "--purge")


def tunnel_state(name: str) -> str:
    st = supervisor.read_status(name)
    return str(st["state"]) if st else "none"


def cut_and_check(
    topology: SandboxTopology, info: dict[str, Any], kernel: str, seconds: float
) -> float:
    """Cut the workstation--jump link for ``seconds``; return how long after the restore
    the forward answered again. Asserts the kernel kept its state and the port."""
    port, token = info["local_port"], info["token"]
    topology.topology.cut()
    try:
        time.sleep(seconds)  # the outage itself, not a synchronisation
    finally:
        topology.topology.restore()
    back = wait_answer(port, token, 30)
    assert back is not None, "the forward did not come back within 30 s of the restore"
    assert run_on(port, token, kernel, "print(kept + 1)") == "42"
    rec = state.load("tt-far")
    assert rec is not None
    assert rec.local_port == port
    assert rec.pid == info["pid"], "a link drop must never restart the server"
    return back


def test_cut_10s_recovers_within_2s(topology: SandboxTopology, far: dict[str, Any]) -> None:
    port, token = far["local_port"], far["token"]
    kernel = new_kernel(port, token)
    run_on(port, token, kernel, "kept = 41")
    topology.topology.cut()
    try:
        # While cut, the supervisor notices and says so (bounded wait).
        deadline = time.monotonic() + 9
        while tunnel_state("tt-far") != "reconnecting" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tunnel_state("tt-far") == "reconnecting"
        time.sleep(max(0.0, deadline - time.monotonic()) + 1)
    finally:
        topology.topology.restore()
    back = wait_answer(port, token, 30)
    assert back is not None
    assert back < 2.0, f"forward back {back:.2f} s after the link returned"
    assert run_on(port, token, kernel, "print(kept + 1)") == "42"
    deadline = time.monotonic() + 5
    while tunnel_state("tt-far") != "connected" and time.monotonic() < deadline:
        time.sleep(0.1)
    status = supervisor.read_status("tt-far")
    assert status is not None
    assert status["state"] == "connected"
    assert status["reconnects"] >= 1


def test_cut_60s_recovers_within_2s(topology: SandboxTopology, far: dict[str, Any]) -> None:
    port, token = far["local_port"], far["token"]
    kernel = new_kernel(port, token)
    run_on(port, token, kernel, "kept = 41")
    back = cut_and_check(topology, far, kernel, 60)
    assert back < 2.0, f"forward back {back:.2f} s after the link returned"


def test_random_cuts_all_recover(
    topology: SandboxTopology, far: dict[str, Any], record_property: Any
) -> None:
    """8 cuts of 1-12 s in a row (seeded), all recovered within 2 s of the restore.

    The long soak (20 cuts of 1-30 s, beside autossh) is the benchmarks' ``soak``
    scenario (``make bench BENCH_ARGS=--full``): five minutes of it do not belong in
    the suite. TETHER_SOAK_CUTS / TETHER_SOAK_MAX change the size here."""
    cuts = int(os.environ.get("TETHER_SOAK_CUTS", "8"))
    longest = float(os.environ.get("TETHER_SOAK_MAX", "12"))
    rng = random.Random(4)
    port, token = far["local_port"], far["token"]
    kernel = new_kernel(port, token)
    run_on(port, token, kernel, "kept = 41")
    worst = 0.0
    for _ in range(cuts):
        worst = max(worst, cut_and_check(topology, far, kernel, rng.uniform(1, longest)))
    record_property("worst_restore_seconds", worst)
    assert worst < 2.0, f"worst restore {worst:.2f} s after the link returned"


def test_workstation_sleep_is_handled_like_a_drop(
    topology: SandboxTopology, far: dict[str, Any]
) -> None:
    """Suspend: the workstation's processes freeze while the network goes away; on resume
    the supervisor finds a dead connection and rebuilds it."""
    port, token = far["local_port"], far["token"]
    kernel = new_kernel(port, token)
    run_on(port, token, kernel, "kept = 41")
    status = supervisor.read_status("tt-far")
    assert status is not None
    frozen = [int(status["pid"])]
    masters = subprocess.run(
        ["pgrep", "-f", "ssh .*ControlMaster=yes.*tt-far"], capture_output=True, text=True
    ).stdout.split()
    frozen += [int(p) for p in masters]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        topology.topology.cut()
        time.sleep(10)  # asleep, and the network changed meanwhile
        topology.topology.restore()
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    back = wait_answer(port, token, 30)
    assert back is not None, "the forward did not come back after resume"
    assert back < 10.0
    assert run_on(port, token, kernel, "print(kept + 1)") == "42"


def test_one_supervisor_per_server_in_its_own_session(tether: Tether, far: dict[str, Any]) -> None:
    first = supervisor.start("tt-far")
    assert supervisor.start("tt-far") == first
    # A second one started by hand sees the lock and leaves at once.
    extra = subprocess.run(
        [sys.executable, "-m", "jupyter_tether.supervisor", "tt-far"],
        capture_output=True,
        timeout=30,
    )
    assert extra.returncode == 0
    assert supervisor.read_status("tt-far")["pid"] == first  # type: ignore[index]
    # Its own session: closing the terminal (SIGHUP to our session) does not reach it.
    assert os.getsid(first) != os.getsid(0)
    log = tether("logs", "tt-far", "--tunnel")
    assert log.rc == 0
    assert "connected" in log.out


def test_kill_9_jupyter_comes_back_on_same_socket_and_token(
    tether: Tether, topology: SandboxTopology, far: dict[str, Any]
) -> None:
    port, token = far["local_port"], far["token"]
    rec = state.load("tt-far")
    assert rec is not None
    # A file saved before the crash.
    body = json.dumps({"type": "file", "format": "text", "content": "precious\n"})
    code, _ = jupyter_api_put(port, token, "/api/contents/tt-saved.txt", body)
    assert code in (200, 201)
    os.kill(far["pid"], signal.SIGKILL)
    start = time.monotonic()
    back = None
    while time.monotonic() - start < 10:
        st = jupyter_api.status(port, token, timeout=1)
        if st is not None and remote_procs(topology.user, "jupyter-lab"):
            back = time.monotonic() - start
            break
        time.sleep(0.1)
    assert back is not None, "Jupyter was not back within 10 s"
    again = state.load("tt-far")
    assert again is not None
    assert again.remote == rec.remote  # same socket
    code, body_out = jupyter_api.request(port, "GET", "/api/contents/tt-saved.txt", token)
    assert code == 200
    assert json.loads(body_out)["content"] == "precious\n"
    up = tether("up", "tt-far", "--no-browser", "--json")
    assert up.rc == 0, up.err
    assert json.loads(up.out)["pid"] != far["pid"]  # a new process, same everything else
    assert json.loads(up.out)["url"] == far["url"]


def jupyter_api_put(port: int, token: str, path: str, body: str) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "PUT",
            path,
            body=body.encode(),
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_crash_loop_is_reported_not_looped(
    tether: Tether, topology: SandboxTopology, jupyter_env: Path
) -> None:
    """Jupyter that cannot start any more (its root_dir vanished) is restarted a bounded
    number of times, then `ls` shows it failed, with the log's tail."""
    home = home_of(topology.user)
    project = home / "tt-vanishing"
    as_user(topology.user, ["mkdir", "-p", str(project)])
    tether.profile("tt-far", env=str(jupyter_env), root_dir="~/tt-vanishing")
    res = tether("up", "tt-far", "--no-browser", "--json")
    assert res.rc == 0, res.err
    info = json.loads(res.out)
    try:
        as_user(topology.user, ["rm", "-rf", str(project)])
        os.kill(info["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 90
        row: dict[str, Any] = {}
        while time.monotonic() < deadline:
            rows = json.loads(tether("ls", "--json").out)
            row = rows[0]
            if row["state"] == "failed":
                break
            time.sleep(0.5)
        assert row["state"] == "failed", row
        assert "crash loop" in str(row.get("detail"))
        assert row.get("log_tail")
        assert not remote_procs(topology.user, "jupyter-lab")
        table = tether("ls").out
        assert "failed" in table
        assert "last lines of its log" in table
    finally:
        tether("down", "tt-far")


@pytest.mark.skipif(not IS_ROOT, reason="simulating a reboot kills every process of an account")
def test_simulated_reboot_with_the_autostart_hook(
    tether: Tether, topology: SandboxTopology, far: dict[str, Any]
) -> None:
    user = topology.user
    res = tether("up", "tt-far", "--no-browser", "--json", "--autostart")
    assert res.rc == 0, res.err
    info = json.loads(res.out)
    assert info["autostart"].startswith("cron")  # no systemd user manager in the test host
    crontab = subprocess.run(
        ["crontab", "-l", "-u", user], capture_output=True, text=True, check=True
    ).stdout
    lines = [ln for ln in crontab.splitlines() if ln.startswith("@reboot") and "tt-far" in ln]
    assert len(lines) == 1, crontab
    command = lines[0][len("@reboot") :].strip()
    assert far["token"] not in crontab
    # The workstation is off: no supervisor. Then the server "reboots": every process
    # of the account dies and /tmp is wiped.
    supervisor.stop("tt-far")
    subprocess.run(["pkill", "-9", "-u", user], check=False)
    deadline = time.monotonic() + 10
    while remote_procs(user, "") and time.monotonic() < deadline:
        time.sleep(0.1)
    rec = state.load("tt-far")
    assert rec is not None
    rundir = Path(rec.remote).parent
    subprocess.run(["rm", "-rf", str(rundir)], check=True)
    assert jupyter_api.status(far["local_port"], far["token"], timeout=2) is None
    # cron runs the hook with /bin/sh and a minimal environment.
    hook = as_user(user, ["/bin/sh", "-c", command], timeout=120)
    assert hook.returncode == 0, hook.stdout + hook.stderr
    assert remote_procs(user, "jupyter-lab")
    # `open` reconnects without reprovisioning, and the old URL (same token) works.
    res = tether("open", "tt-far", "--no-browser", "--json")
    assert res.rc == 0, res.err
    assert json.loads(res.out)["url"] == far["url"]
    assert jupyter_api.status(far["local_port"], far["token"]) is not None
    purge = tether("down", "tt-far", "--purge")
    assert purge.rc == 0, purge.err
    after = subprocess.run(["crontab", "-l", "-u", user], capture_output=True, text=True)
    assert "tt-far" not in after.stdout
