"""`tether demo`: the README's first command works and cleans up after itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import remote_procs

pytestmark = pytest.mark.e2e


def test_demo_runs_up_against_a_sandbox_and_tears_down(tether_home: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "jupyter_tether", "demo", "--no-browser", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "JUPYTER_TETHER_SSH_CONFIG"},
        check=False,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["state"] == "running"
    assert info["url"].startswith("http://127.0.0.1:")
    assert "token=" in info["url"]
    # Torn down: no sandbox sshd, no demo Jupyter, no record.
    me = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    assert not [p for p in remote_procs(me, "tether-demo") if "sshd" in p or "jupyter" in p]
    assert not (tether_home / "state" / "servers" / "tether-demo.json").exists()
