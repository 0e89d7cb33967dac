"""The Slurm lab itself: what the scheduler tests rely on it to do."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from testing.cluster import NODES, Cluster
from testing.helpers.users import home_of

pytestmark = [pytest.mark.slurm, pytest.mark.netns]

USER = "tether-test"


def _sbatch_over_ssh(lab: Cluster, script: str, *args: str) -> int:
    """Submit as the test account through the login node's sshd, with plain
    ``sbatch --parsable`` and no SLURM_CONF in the session."""
    command = 'test -z "${SLURM_CONF+set}" && sbatch --parsable ' + " ".join(args)
    result = lab.ssh(USER, command, input=script)
    assert result.ok, (result.stderr, lab.logs())
    return int(result.stdout.strip().split(";")[0])


def test_sinfo_shows_both_nodes_idle(lab: Cluster) -> None:
    result = lab.ssh(USER, "sinfo -h -N -o '%N %P %t %l'")
    assert result.ok, result.stderr
    rows = sorted(tuple(line.split()) for line in result.stdout.splitlines())
    assert rows == sorted(
        [(node, "debug*", "idle", "infinite") for node in NODES]
        + [(node, "short", "idle", "2:00") for node in NODES]
    )


def test_job_runs_on_a_compute_node(lab: Cluster) -> None:
    job = _sbatch_over_ssh(lab, '#!/bin/sh\nhostname\necho "$SLURMD_NODENAME"\n')
    done = lab.wait_state(job, {"COMPLETED"})
    output = home_of(USER) / f"slurm-{job}.out"
    try:
        hostname, nodename = output.read_text().split()
    finally:
        output.unlink(missing_ok=True)
    assert done.user == USER
    assert done.nodes in NODES
    assert hostname == nodename == done.nodes


def test_tmp_on_a_node_is_its_own(lab: Cluster) -> None:
    name = f"/tmp/tether-lab-{secrets.token_hex(4)}"
    job = lab.submit(USER, f"#!/bin/sh\necho on-node1 > {name}\n", "-w", "node1", "-o", "/dev/null")
    lab.wait_state(job, {"COMPLETED"})
    assert lab.node_exec("node1", ["cat", name]).stdout == "on-node1\n"
    assert not Path(name).exists()
    assert not lab.node_exec("node2", ["test", "-e", name]).ok
    assert not lab.node_exec("login", ["test", "-e", name]).ok


def test_srun_overlap_carries_bytes_both_ways(lab: Cluster) -> None:
    job = lab.submit(USER, "#!/bin/sh\nsleep 300\n", "-w", "node2", "-o", "/dev/null")
    lab.wait_state(job, {"RUNNING"})
    payload = "".join(secrets.token_hex(32) + "\n" for _ in range(2000))  # 130 kB
    srun = f"srun --jobid={job} --overlap -u -Q -N1 -n1 -w node2 sh -c 'hostname; exec cat'"
    result = lab.ssh(USER, srun, input=payload, timeout=60)
    assert result.ok, (result.stderr, lab.logs())
    assert result.stdout == "node2\n" + payload


def test_drained_cluster_leaves_a_job_pending_with_a_reason(lab: Cluster) -> None:
    for node in NODES:
        lab.drain(node)
    job = lab.submit(USER, "#!/bin/sh\ntrue\n", "-o", "/dev/null")
    pending = lab.wait_state(job, {"PENDING"})
    deadline = time.monotonic() + 15
    while pending.reason == "None" and time.monotonic() < deadline:  # not scheduled yet
        time.sleep(0.2)
        pending = lab.wait_state(job, {"PENDING"})
    assert pending.reason not in ("None", "")
    for node in NODES:
        lab.resume(node)
    lab.wait_state(job, {"RUNNING", "COMPLETING", "COMPLETED"})


def test_stopped_controller_fails_fast_and_keeps_the_job(lab: Cluster) -> None:
    job = lab.submit(USER, "#!/bin/sh\nsleep 300\n", "-o", "/dev/null")
    running = lab.wait_state(job, {"RUNNING"})
    lab.stop_controller()
    start = time.monotonic()
    result = lab.ssh(USER, f"squeue -h -j {job}", timeout=30)
    elapsed = time.monotonic() - start
    assert not result.ok
    assert "Unable to contact slurm controller" in result.stderr
    assert elapsed < 10
    lab.start_controller()
    again = lab.wait_state(job, {"RUNNING"})
    assert again.nodes == running.nodes


def test_cut_link_leaves_login_to_nodes_up(lab: Cluster) -> None:
    lab.cut_link()
    assert not lab.ssh(USER, "true", timeout=20).ok
    sinfo = lab.as_user(USER, ["sinfo", "-h", "-o", "%P %t"])
    assert sinfo.stdout.split() == ["debug*", "idle", "short", "idle"]
    lab.restore_link()
    assert lab.ssh(USER, "true").ok


def test_ssh_to_a_node_through_the_login_node(lab: Cluster) -> None:
    lab.start_node_sshds()
    result = lab.ssh(USER, "hostname; echo x > /tmp/tether-lab-ssh; ls /tmp", machine="node1")
    assert result.ok, (result.stderr, lab.logs())
    assert result.stdout.split()[0] == "node1"
    assert lab.node_exec("node1", ["test", "-e", "/tmp/tether-lab-ssh"]).ok
    assert not lab.node_exec("node2", ["test", "-e", "/tmp/tether-lab-ssh"]).ok
