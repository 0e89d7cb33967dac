"""Parsing the probe's output, including rc-file chatter around it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from jupyter_tether import clients, probe, remote

SAMPLE = """Welcome to the cluster! (printed by a .bashrc)
@@T probe_version=1
@@T os=Linux
@@T arch=x86_64
@@T hostname=aura
@@T uid=1000
@@T user=ada
@@T home=/home/ada
@@T glibc=2.36
@@T home_free_kb=123456
@@T xdg_runtime_dir=
@@T linger=no
@@T login_path=/home/ada/.local/bin:/usr/bin:/bin
@@T module_init=/usr/share/modules/init/sh
@@T lmod=
@@T tool_tmux=/usr/bin/tmux
@@T tool_screen=
@@T python=/usr/bin/python3 3.11.2
@@T python=/usr/bin/python3.9 3.9.18
@@T python=/usr/bin/python3 3.11.2
@@T jupyter=/home/ada/venv/bin/jupyter
@@T jupyter_shebang=#!/home/ada/venv/bin/python3
@@T server={"name": "aura", "pid": 42}
@@T done=1
"""


def test_parse_sample() -> None:
    p = probe.parse(SAMPLE)
    assert p.hostname == "aura"
    assert p.glibc == "2.36"
    assert p.home_free_kb == 123456
    assert p.has("tmux") and not p.has("screen")
    assert [py.path for py in p.pythons] == ["/usr/bin/python3", "/usr/bin/python3.9"]
    best = p.best_python()
    assert best is not None and best.version_str == "3.11.2"
    assert p.jupyter_python() == "/home/ada/venv/bin/python3"
    assert p.servers == ({"name": "aura", "pid": 42},)
    assert p.module_init == "/usr/share/modules/init/sh"


def test_a_cluster_has_sbatch_and_a_slurm_config() -> None:
    assert probe.parse(SAMPLE).scheduler is None
    only_client = SAMPLE.replace("@@T tool_screen=\n", "@@T tool_sbatch=/usr/bin/sbatch\n")
    assert probe.parse(only_client).scheduler is None  # slurm-client on a workstation
    cluster = only_client.replace(
        "@@T lmod=\n", "@@T lmod=\n@@T slurm_conf=/etc/slurm/slurm.conf\n"
    )
    p = probe.parse(cluster)
    assert p.scheduler == "slurm" and p.slurm_conf == "/etc/slurm/slurm.conf"


def test_probe_script_finds_the_login_shells_slurm_conf(tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=test\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SHELL": "", "SLURM_CONF": str(conf)}
    out = subprocess.run(
        ["sh", "-s"],
        input=remote.probe_script(),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert probe.parse(out.stdout).slurm_conf == str(conf)


def test_env_shebang_resolves_through_candidates() -> None:
    text = SAMPLE.replace("#!/home/ada/venv/bin/python3", "#!/usr/bin/env python3.9")
    assert probe.parse(text).jupyter_python() == "/usr/bin/python3.9"


def test_truncated_probe_is_an_error() -> None:
    with pytest.raises(ValueError, match="incomplete"):
        probe.parse(SAMPLE.replace("@@T done=1\n", ""))


def test_probe_script_runs_under_dash_and_bash(tmp_path: object) -> None:
    import shutil
    import subprocess

    for shell in ("sh", "bash", "dash"):
        exe = shutil.which(shell)
        if exe is None:
            continue
        out = subprocess.run(
            [exe, "-s"], input=remote.probe_script(), capture_output=True, text=True, timeout=60
        )
        p = probe.parse(out.stdout)
        assert p.uid >= 0
        assert p.pythons, "at least one python3 should be found on this machine"


def test_agent_script_reports_missing_python() -> None:
    import subprocess

    script = clients.script("/nonexistent/bin/python", "agent", {"op": "status"})
    out = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, timeout=30)
    answer = clients.parse_answer(out.stdout)
    assert answer is not None
    assert answer["ok"] is False
    assert answer["kind"] == "no_python"


def test_agent_script_survives_bash_read_ahead() -> None:
    """bash reads ahead on pipes; the here-document still delivers the request."""
    import subprocess
    import sys

    script = clients.script(sys.executable, "agent", {"op": "status", "name": "none-such"})
    for shell in ("bash", "sh"):
        out = subprocess.run(
            [shell, "-s"], input=script, capture_output=True, text=True, timeout=30
        )
        answer = clients.parse_answer(out.stdout)
        assert answer is not None, out.stderr
        assert answer["ok"] is True
        assert answer["servers"] == []


def _old_pythons() -> list[str]:
    """Interpreters older than ours on this machine (the agent must run on 3.8+)."""
    import glob
    import shutil
    import subprocess

    found = {shutil.which(f"python3.{minor}") for minor in (8, 9, 10)}
    found.update(glob.glob("/root/.pyenv/versions/3.[89].*/bin/python3"))
    found.update(glob.glob("/usr/bin/python3.[89]"))
    usable = []
    for p in sorted(p for p in found if p):
        # pyenv shims exist for versions that are not selected: keep the ones that run.
        ok = subprocess.run([p, "-c", "pass"], capture_output=True, timeout=30).returncode == 0
        if ok:
            usable.append(p)
    return usable


@pytest.mark.parametrize("program", ["agent", "builder"])
def test_remote_programs_run_under_old_pythons(program: str) -> None:
    import subprocess

    pythons = _old_pythons()
    if not pythons:
        pytest.skip("no Python 3.8-3.10 on this machine")
    for python in pythons:
        op = {"agent": {"op": "status", "name": "none-such"}, "builder": {"op": "listen"}}[program]
        script = clients.script(python, program, op)
        out = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, timeout=60)
        answer = clients.parse_answer(out.stdout)
        assert answer is not None, f"{python}: {out.stderr[-500:]}"
        assert answer["ok"] is True, (python, answer)
