"""The Slurm lab's pure parts: its slurm.conf, hosts file and squeue parsing."""

from __future__ import annotations

from pathlib import Path

from testing.cluster import Job, hosts_text, parse_squeue, slurm_conf_text


def test_slurm_conf_has_the_lab_settings() -> None:
    lab = Path("/var/tmp/lab")
    conf = slurm_conf_text(
        lab=lab, controller_address="198.18.1.1", nodes={"node1": "198.18.1.2", "node2": "x"}
    )
    lines = conf.splitlines()
    assert "SlurmctldHost=login(198.18.1.1)" in lines
    assert "AuthInfo=socket=/var/tmp/lab/munge/munge.socket" in lines
    assert "MinJobAge=10" in lines
    assert "MessageTimeout=3" in lines
    assert "NodeName=node1 NodeAddr=198.18.1.2 CPUs=2 State=UNKNOWN" in lines
    assert "PartitionName=debug Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP" in lines
    assert "PartitionName=short Nodes=node1,node2 MaxTime=2 State=UP" in lines
    assert not any(
        line.startswith(("AccountingStorageHost", "SlurmctldPort=6817")) for line in lines
    )


def test_hosts_text_names_every_machine() -> None:
    text = hosts_text({"login": "198.18.1.1", "node1": "198.18.1.2"})
    assert text == "127.0.0.1 localhost\n198.18.1.1 login\n198.18.1.2 node1\n"


def test_parse_squeue_reads_delimited_lines() -> None:
    text = "7|tether-test|debug|PENDING|ReqNodeNotAvail, UnavailableNodes:node[1-2]|\n\n"
    text += "8|tether-other|short|RUNNING|None|node2\n"
    assert parse_squeue(text) == [
        Job(
            7, "tether-test", "debug", "PENDING", "ReqNodeNotAvail, UnavailableNodes:node[1-2]", ""
        ),
        Job(8, "tether-other", "short", "RUNNING", "None", "node2"),
    ]
