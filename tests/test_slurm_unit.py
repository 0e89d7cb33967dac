from __future__ import annotations

import pytest

from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.schedulers import JobSpec
from jupyter_tether.schedulers.slurm import Slurm, hopeless, parse_time_left


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1-02:03:04", 93784),
        ("02:03:04", 7384),
        ("03:04", 184),
        ("UNLIMITED", None),
        ("NOT_SET", None),
        ("INVALID", None),
    ],
)
def test_time_left(text: str, seconds: int | None) -> None:
    assert parse_time_left(text) == seconds


def test_submit_and_status() -> None:
    s = Slurm()
    argv = s.submit_argv(JobSpec(name="t", partition="debug", time="10", extra_args=("--x=a b",)))
    assert argv[:2] == ["sbatch", "--parsable"] and "--partition=debug" in argv
    assert "--signal=B:USR1@900" in argv and argv[-1] == "--x=a b"
    assert s.parse_submit(0, "42;test\n", "") == ("42", "test")
    assert s.parse_submit(0, "7\n", "") == ("7", None)
    with pytest.raises(TetherError) as exc:
        s.parse_submit(1, "", "sbatch: error: invalid partition name specified\n")
    assert exc.value.code == ExitCode.SCHEDULER
    st = s.parse_status(0, "RUNNING|None|node1|09:59|2026-12-02T12:00:00|2026-12-02T11:50:00\n", "")
    assert (st.state, st.node, st.time_left) == ("running", "node1", 599)
    st = s.parse_status(0, "PENDING|PartitionTimeLimit||10:00|N/A|N/A\n", "")
    assert st.state == "pending" and hopeless(st)
    assert (
        s.parse_status(1, "", "slurm_load_jobs error: Invalid job id specified\n").state == "done"
    )
    unk = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
    assert s.parse_status(1, "", unk).state == "unknown"
    parts = s.parse_partitions("debug*|infinite|up|1|2|2000\n")
    assert parts[0].name == "debug" and parts[0].default
