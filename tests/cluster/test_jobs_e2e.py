"""`tether up` as a Slurm job, on the lab of :mod:`testing.cluster` (real slurmctld,
slurmd and munge; a login node and two compute nodes in their own namespaces).

The profile ``hpc`` logs the test account in to the login node; Jupyter runs on a
compute node, reached through the stdio bridge unless a test takes it away.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_tether import jupyter_api
from testing.cluster import NODES, Cluster
from testing.helpers.cli import Tether
from testing.helpers.jupyter import new_kernel, run_on

pytestmark = pytest.mark.e2e

PROFILE = "hpc"


@pytest.fixture
def hpc(tether: Tether, lab: Cluster, remote_user: str, jupyter_env: Path) -> Iterator[str]:
    """The cluster profile; whatever job a test leaves is cancelled afterwards."""
    tether.profile(
        PROFILE,
        ssh=lab.alias(remote_user),
        env=str(jupyter_env),
        scheduler="slurm",
        slurm={"time": "10"},
    )
    yield PROFILE
    tether("down", PROFILE)
    lab.as_user(remote_user, ["scancel", "-u", remote_user])


def up(tether: Tether, *flags: str) -> dict[str, Any]:
    run = tether("up", PROFILE, "--json", "--no-browser", *flags)
    assert run.rc == 0, run.err + run.out
    data: dict[str, Any] = json.loads(run.out)
    return data


def ls(tether: Tether) -> dict[str, Any]:
    run = tether("ls", "--json")
    assert run.rc == 0, run.err
    rows: list[dict[str, Any]] = json.loads(run.out)
    return next(r for r in rows if r["name"] == PROFILE)


def active(lab: Cluster, user: str) -> list[Any]:
    """``user``'s jobs that are queued or running (ended ones stay listed for a while)."""
    live = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"}
    return [j for j in lab.squeue() if j.user == user and j.state in live]


def session_exists(lab: Cluster, user: str) -> bool:
    probe = lab.as_user(user, ["test", "-e", f".local/state/jupyter-tether/jobs/{PROFILE}"])
    return bool(probe.returncode == 0)


def tcp_listeners(lab: Cluster, node: str) -> list[str]:
    """``ss -ltnp`` on ``node``, but for slurmd's own port."""
    out = lab.node_exec(node, ["ss", "-Hltnp"]).stdout
    return [line for line in out.splitlines() if "slurmd" not in line]


def test_jupyter_runs_on_a_compute_node_and_down_cancels_it(
    tether: Tether,
    hpc: str,
    lab: Cluster,
    remote_user: str,
    other_user: str,
    tether_home: Path,
) -> None:
    info = up(tether)
    job = info["job"]
    assert job["id"] and job["node"] in NODES and job["method"] == "bridge"
    port, token = info["local_port"], info["url"].split("token=")[1]

    # No TCP listener of the job on its node before any kernel runs; a kernel then adds
    # only ipykernel's IOPub pipe on the node's loopback (hard-wired in ipykernel, and
    # yielding nothing to a subscriber: SECURITY.md), never a port of Jupyter's.
    assert tcp_listeners(lab, job["node"]) == []
    kernel = new_kernel(port, token)
    assert run_on(port, token, kernel, "import socket; print(socket.gethostname())") == job["node"]
    listeners = tcp_listeners(lab, job["node"])
    assert all(line.split()[3].startswith("127.0.0.1:") for line in listeners), listeners
    assert len(listeners) <= 1, listeners
    assert not any(f"pid={info['pid']}," in line for line in listeners), listeners

    row = ls(tether)
    assert row["job"]["id"] == job["id"] and row["job"]["state"] == "running"
    assert 0 < row["job"]["time_left"] <= 600
    queued = lab.squeue(int(job["id"]))
    assert queued and queued[0].state == "RUNNING" and queued[0].user == remote_user
    logs = tether("logs", PROFILE)
    assert logs.rc == 0 and f"Jupyter is up on {job['node']} (job {job['id']})" in logs.out

    # The socket: unreachable for another user on the node, absent on the login node
    # (each machine has its own /tmp).
    sock = tether_remote(tether)
    connect = f"import socket; socket.socket(socket.AF_UNIX).connect({sock!r})"
    other = lab.node_exec(
        job["node"], ["runuser", "-u", other_user, "--", "python3", "-c", connect]
    )
    assert other.returncode != 0 and "PermissionError" in other.stderr, other.stderr
    login = lab.as_user(other_user, ["python3", "-c", connect])
    assert login.returncode != 0 and "FileNotFoundError" in login.stderr, login.stderr

    run = tether("down", PROFILE)
    assert run.rc == 0, run.err
    assert f"cancelled job {job['id']}" in run.err
    deadline = time.monotonic() + 30
    while active(lab, remote_user) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert active(lab, remote_user) == []
    assert not session_exists(lab, remote_user)
    assert not (tether_home / "state" / "jobs" / PROFILE).exists()  # nor its bridge key
    assert jupyter_api.status(port, token, timeout=2) is None


def tether_remote(tether: Tether) -> str:
    """The socket the record forwards to (on the job's node)."""
    from jupyter_tether import state

    rec = state.load(PROFILE)
    assert rec is not None
    return rec.remote


def test_a_cut_link_comes_back_with_the_job_and_its_kernel(
    tether: Tether, hpc: str, lab: Cluster
) -> None:
    info = up(tether)
    port, token = info["local_port"], info["url"].split("token=")[1]
    kernel = new_kernel(port, token)
    run_on(port, token, kernel, "kept = 41")
    wait_connected(tether)
    lab.cut_link()
    try:
        time.sleep(10)
    finally:
        lab.restore_link()
    restored = time.monotonic()
    back = None
    while time.monotonic() - restored < 30:
        if jupyter_api.status(port, token, timeout=1) is not None:
            back = time.monotonic() - restored
            break
        time.sleep(0.05)
    assert back is not None, "the URL never answered again"
    assert back < 2.0, f"the URL answered {back:.2f} s after the link returned"
    assert run_on(port, token, kernel, "print(kept + 1)") == "42"
    assert lab.squeue(int(info["job"]["id"]))[0].state == "RUNNING"


def wait_connected(tether: Tether, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while ls(tether)["tunnel"]["state"] != "connected" and time.monotonic() < deadline:
        time.sleep(0.2)


def test_pending_shows_the_reason_and_ctrl_c_leaves_nothing(
    tether: Tether, hpc: str, lab: Cluster, remote_user: str
) -> None:
    for node in NODES:
        lab.drain(node)
    child = subprocess.Popen(
        [sys.executable, "-m", "jupyter_tether", "up", PROFILE, "--no-browser"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert child.stderr is not None
    seen = []
    deadline = time.monotonic() + 60
    for line in child.stderr:  # bounded by the deadline and the child's own end
        seen.append(line)
        if "pending (" in line or time.monotonic() > deadline:
            break
    child.send_signal(signal.SIGINT)
    rest = child.communicate(timeout=60)[1]
    text = "".join(seen) + rest
    assert "pending (" in text and "ReqNodeNotAvail" in text, text
    assert child.returncode == 130, text
    assert "cancelled job" in text
    assert active(lab, remote_user) == []
    assert not session_exists(lab, remote_user)


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--partition", "short", "--time", "10"), "can never start"),
        (("--partition", "nosuch"), "Slurm does not know that partition"),
    ],
)
def test_a_job_that_can_never_run_is_an_error_at_once(
    tether: Tether, hpc: str, lab: Cluster, remote_user: str, flags: tuple[str, ...], said: str
) -> None:
    started = time.monotonic()
    run = tether("up", PROFILE, "--no-browser", *flags)
    assert run.rc == 11, run.err
    assert said in run.err
    if "never" in said:
        assert "short: time limit 2:00" in run.err  # sinfo's partitions and their limits
    assert time.monotonic() - started < 30
    assert active(lab, remote_user) == []
    assert not session_exists(lab, remote_user)


def test_the_time_limit_warns_ends_and_up_starts_again(
    tether: Tether, hpc: str, lab: Cluster, tether_home: Path
) -> None:
    info = up(tether, "--partition", "short", "--time", "1")
    first = info["job"]["id"]
    log = tether_home / "state" / "supervisors" / f"{PROFILE}.log"
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if "has ended: the time limit" in text:
            break
        time.sleep(1)
    assert "ends in about 1 min: save your work" in text, text
    row = ls(tether)
    assert row["state"] == "done (the time limit)", row
    assert "DUE TO TIME LIMIT" in row["log_tail"]
    again = tether("up", PROFILE, "--json", "--no-browser")
    assert again.rc == 0, again.err
    second = json.loads(again.out)
    assert any(f"the last job ({first}) has ended" in n for n in second["notes"]), second
    assert second["job"]["id"] != first
    assert jupyter_api.status(second["local_port"], second["url"].split("token=")[1]) is not None


def test_a_stopped_controller_is_unknown_and_cancels_nothing(
    tether: Tether, hpc: str, lab: Cluster
) -> None:
    info = up(tether)
    port, token = info["local_port"], info["url"].split("token=")[1]
    lab.stop_controller()
    try:
        row = ls(tether)
        assert row["state"] == "running"  # the notebook still answers
        assert row["job"]["state"] == "unknown", row
        kernel = new_kernel(port, token)
        assert run_on(port, token, kernel, "print(6 * 7)") == "42"
    finally:
        lab.start_controller()
    assert lab.wait_state(int(info["job"]["id"]), {"RUNNING"}).state == "RUNNING"


def test_without_the_bridge_ssh_to_the_node_then_tcp(
    tether: Tether, hpc: str, lab: Cluster, remote_user: str, client_key: Path, tether_home: Path
) -> None:
    # A site where srun into a running job is not allowed: the user's own srun fails.
    fake = "mkdir -p ~/bin && printf '#!/bin/sh\\nexit 1\\n' >~/bin/srun && chmod 755 ~/bin/srun"
    assert lab.as_user(remote_user, ["sh", "-c", fake]).returncode == 0
    try:
        lab.start_node_sshds()
        nodes = Path(os.environ["JUPYTER_TETHER_SSH_CONFIG"])
        nodes.write_text(
            nodes.read_text()
            + f"\nHost {' '.join(NODES)}\n    IdentityFile {client_key}\n    IdentitiesOnly yes\n"
            # The nodes' keys are new each run: learnt here, never in the real ~/.ssh.
            + f"    UserKnownHostsFile {tether_home / 'known_hosts_nodes'}\n"
        )
        info = up(tether)
        assert info["job"]["method"] == "ssh", info["notes"]
        assert jupyter_api.status(info["local_port"], info["url"].split("token=")[1]) is not None
        tether("down", PROFILE)

        lab.stop_node_sshds()
        run = tether("up", PROFILE, "--json", "--no-browser")
        assert run.rc == 0, run.err
        info = json.loads(run.out)
        assert any("other users of the cluster can reach that port" in n for n in info["notes"])
        assert info["job"]["method"] == "tcp"
        code, _ = jupyter_api.request(info["local_port"], "GET", "/api/status", None, timeout=5)
        assert code == 403  # without the token
    finally:
        lab.as_user(remote_user, ["rm", "-rf", "bin"])


def test_a_login_node_used_as_a_server_says_once_how_to_use_the_nodes(
    tether: Tether, lab: Cluster, remote_user: str, jupyter_env: Path
) -> None:
    tether.profile("plain", ssh=lab.alias(remote_user), env=str(jupyter_env))
    try:
        first = tether("up", "plain", "--no-browser")
        assert first.rc == 0, first.err
        assert "is a slurm login node" in first.err and "--scheduler" in first.err
        second = tether("up", "plain", "--no-browser")
        assert second.rc == 0, second.err
        assert "login node" not in second.err
    finally:
        tether("down", "plain")
