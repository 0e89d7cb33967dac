"""Batch jobs without a scheduler: the profile's job table, the job script under bash,
the bridge's ProxyCommand, and how an ending is read."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest

from jupyter_tether import batch, cli, config, remote, ssh
from jupyter_tether.batch import nodes
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.schedulers.slurm import Slurm

# A stand-in for Jupyter: binds the socket named by --sock=, exits 0 on SIGTERM.
FAKE_JUPYTER = """
import signal, socket, sys, time
sock = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--sock=")][0]
s = socket.socket(socket.AF_UNIX)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(float(sys.argv[1]))
s.bind(sock)
s.listen(1)
while True:
    time.sleep(0.1)
"""


def _write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_a_profile_asks_for_a_job_with_its_slurm_table(tmp_path: Path) -> None:
    path = _write_config(
        tmp_path,
        '[hosts.hpc]\nssh = "login"\nscheduler = "slurm"\n'
        '[hosts.hpc.slurm]\npartition = "gpu"\ntime = "2:00:00"\ncpus = 4\ngpus = 1\n'
        'sbatch_args = ["--exclusive"]\n',
    )
    profile = config.resolve("hpc", config_path=path)
    assert profile.scheduler == "slurm"
    assert profile.job is not None
    assert (profile.job.partition, profile.job.time, profile.job.cpus) == ("gpu", "2:00:00", 4)
    assert profile.job.gpus == "1"
    argv = Slurm().submit_argv(profile.job)
    assert argv[:2] == ["sbatch", "--parsable"]
    assert "--partition=gpu" in argv and "--gpus=1" in argv and argv[-1] == "--exclusive"


def test_flags_override_the_table_and_alone_mean_a_job(tmp_path: Path) -> None:
    path = _write_config(tmp_path, '[hosts.hpc.slurm]\npartition = "gpu"\n')
    args = cli.build_parser().parse_args(["up", "hpc", "--time", "30", "--partition", "debug"])
    profile = config.resolve("hpc", config_path=path, overrides=cli._overrides(args))
    assert profile.scheduler == "slurm"  # job flags alone mean "as a job"
    assert profile.job is not None
    assert (profile.job.partition, profile.job.time) == ("debug", "30")
    plain = config.resolve("hpc", config_path=path)
    assert plain.scheduler is None and plain.job is None


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ('[hosts.hpc.slurm]\npartiton = "gpu"\n', "unknown key 'partiton'"),
        ('[hosts.hpc.slurm]\ntime = "two hours"\n', "time = 'two hours'"),
        ("[hosts.hpc.slurm]\ncpus = 0\n", "cpus = 0"),
        ('[hosts.hpc.slurm]\naccount = "a; rm -rf ~"\n', "account ="),
        ('[hosts.hpc]\nscheduler = "pbs"\n', "scheduler = 'pbs'"),
    ],
)
def test_a_bad_job_setting_names_its_line(tmp_path: Path, line: str, where: str) -> None:
    path = _write_config(tmp_path, line)
    with pytest.raises(TetherError) as err:
        config.resolve("hpc", config_path=path)
    assert err.value.code == ExitCode.CONFIG
    assert where in err.value.message
    assert f"{path}:" in err.value.message


def test_a_bad_job_flag_is_a_usage_error(tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(["up", "hpc", "--time", "soon"])
    with pytest.raises(TetherError) as err:
        config.resolve("hpc", config_path=tmp_path / "none.toml", overrides=cli._overrides(args))
    assert err.value.code == ExitCode.USAGE


def test_the_rendered_script_keeps_the_job_options_and_the_body() -> None:
    spec = config.resolve(
        "hpc", config_path=Path("/nonexistent"), overrides={"slurm": {"time": "5"}}
    ).job
    assert spec is not None
    text = Slurm().render(spec, remote.read("job.sh"))
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "#SBATCH --time=5" in lines
    assert "#SBATCH --signal=B:USR1@900" in lines
    assert "session=${TETHER_SESSION:?TETHER_SESSION names the session directory}" in text
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


# --- the job script, run here under bash with a stand-in Jupyter -------------------------


def _session(tmp_path: Path, delay: float) -> tuple[Path, Path, dict[str, str]]:
    session = tmp_path / "session"
    session.mkdir(mode=0o700)
    # Short, like a node's /tmp: AF_UNIX paths are limited to ~107 bytes.
    node_tmp = Path(tempfile.mkdtemp(prefix="nt", dir="/tmp"))
    fake = tmp_path / "fake_jupyter.py"
    fake.write_text(FAKE_JUPYTER)
    argv = [sys.executable, str(fake), str(delay)]
    (session / "job.env").write_text(
        "TETHER_NAME=hpc\nTETHER_MODULES=''\nTETHER_MODULE_INIT=''\nTETHER_STARTUP=100\n"
        f"PATH={shlex.quote(os.environ['PATH'])}\nexport PATH\n"
        f"set -- {shlex.join(argv)}\n"
    )
    env = dict(
        os.environ,
        TETHER_SESSION=str(session),
        TETHER_NODE_TMP=str(node_tmp),
        SLURM_JOB_ID="42",
        SLURMD_NODENAME="node7",
    )
    return session, node_tmp, env


def _wait_for(path: Path, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), path


def test_the_job_script_reports_ready_warns_and_ends_cleanly(tmp_path: Path) -> None:
    session, node_tmp, env = _session(tmp_path, delay=0.3)
    job = subprocess.Popen(["bash", "-s"], stdin=subprocess.PIPE, env=env, text=True)
    assert job.stdin is not None
    job.stdin.write(remote.read("job.sh"))
    job.stdin.close()
    try:
        _wait_for(session / "ready.json")
        ready = json.loads((session / "ready.json").read_text())
        assert (ready["job"], ready["node"]) == ("42", "node7")
        rundir = Path(ready["rundir"])
        assert rundir.parent == node_tmp
        assert oct(rundir.stat().st_mode & 0o777) == "0o700"
        assert Path(ready["sock"]) == rundir / "jupyter.sock"
        assert ready["sock"] not in (session / "job.env").read_text()
        job.send_signal(signal.SIGUSR1)  # what sbatch --signal=B:USR1@... sends
        _wait_for(session / "warned")
        assert job.poll() is None  # a warning is not the end
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=10) == 0
    finally:
        if job.poll() is None:
            job.kill()
    ended = json.loads((session / "ended.json").read_text())
    assert ended["how"] == "Jupyter exited with status 0"
    assert not (session / "ready.json").exists()
    assert list(node_tmp.iterdir()) == []  # the private directory went with the job
    node_tmp.rmdir()


def test_a_jupyter_that_dies_at_start_leaves_no_ready_record(tmp_path: Path) -> None:
    session, node_tmp, env = _session(tmp_path, delay=0.1)
    (session / "job.env").write_text(
        (session / "job.env").read_text().replace("set -- ", "set -- false ")
    )
    done = subprocess.run(
        ["bash", "-s"], input=remote.read("job.sh"), env=env, text=True, timeout=30
    )
    assert done.returncode != 0
    assert not (session / "ready.json").exists()
    assert "status 1" in json.loads((session / "ended.json").read_text())["how"]
    assert list(node_tmp.iterdir()) == []
    node_tmp.rmdir()


# --- the bridge and the records ---------------------------------------------------------


def test_the_bridge_runs_the_jobs_own_sshd_through_srun(tmp_path: Path) -> None:
    login = ssh.Target(destination="login", config_file=tmp_path / "cfg", control_dir=tmp_path)
    job = batch.Job(id="42", cluster=None, session="/home/u/.local/state/jupyter-tether/jobs/x")
    ready = {"node": "node7", "sshd": "/usr/sbin/sshd"}
    found = types.SimpleNamespace(login_path="/usr/bin:/bin", user="u")
    command = nodes.bridge_command(login, found, job, ready)  # type: ignore[arg-type]
    # ssh expands %-tokens in a ProxyCommand: the outer ControlPath's %C must be escaped.
    assert "%%C" in command and "%C" not in command.replace("%%C", "")
    argv = shlex.split(command.replace("%%", "%"))
    assert argv[0] == "ssh" and "login" in argv
    remote_cmd = shlex.split(argv[-1])
    assert remote_cmd[:2] == ["sh", "-c"]
    inner = remote_cmd[2]
    assert "srun --jobid=42 --overlap -u -Q -N1 -n1 -wnode7" in inner
    assert "/usr/sbin/sshd -i -f /dev/null" in inner
    assert f"HostKey={job.session}/bridge_host_key" in inner
    assert "--pty" not in inner  # a pty would corrupt the stream


def test_a_job_record_round_trips_and_an_ending_is_read_from_the_output() -> None:
    job = batch.Job(id="7", cluster="c2", node="n1", session="/s", method="bridge", path="/bin")
    assert batch.Job.from_dict(job.as_dict()) == job
    answer = {
        "output": "slurmstepd: error: *** JOB 7 ON n1 CANCELLED AT 2026-12-02 DUE TO TIME LIMIT ***"
    }
    assert batch.ending(answer) == "the time limit"  # type: ignore[arg-type]
    assert batch.ending({"output": "*** JOB 7 ON n1 CANCELLED AT 2026 ***"}) == "scancel"  # type: ignore[typeddict-item]
    assert batch.ending({"output": ""}) is None  # type: ignore[typeddict-item]


def test_the_warning_before_the_end_reaches_the_desktop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_tether import supervisor

    said = tmp_path / "said"
    fake = tmp_path / "notify-send"
    fake.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >{said}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert supervisor.notify("jupyter-tether", "job 7 of hpc ends in about 5 min")
    assert said.read_text() == "-a|jupyter-tether|jupyter-tether|job 7 of hpc ends in about 5 min|"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert supervisor.notify("jupyter-tether", "nobody to tell") is False
