"""The benchmark harness cannot rot: one repetition of every scenario, smallest sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks import scenarios
from benchmarks.registry import REGISTRY

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="the benchmarks need root"),
]
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)
def test_every_scenario_runs_once(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    data = json.loads((tmp_path / "latest.json").read_text())
    scenarios.load()
    ran = {s["name"]: s for s in data["scenarios"]}
    assert set(ran) == set(REGISTRY)
    for name, s in ran.items():
        assert s["error"] is None, (name, s["error"])
        assert len(s["runs"]) == 1
        values = s["runs"][0]["values"]
        assert values, f"{name} measured nothing"
        assert all(v >= 0 for v in values.values()), (name, values)
    table = (tmp_path / "latest.md").read_text()
    assert "| warm_up | tether up | s |" in table
    # The baselines are measured for real, whatever tether can do yet.
    assert "manual, online: total" in ran["cold_up"]["runs"][0]["values"]
    assert "autossh tuned, 3 s cut: restore" in ran["reconnect"]["runs"][0]["values"]
    soak = ran["soak"]["runs"][0]["values"]
    assert soak["tether, 2 cuts of 1-2 s: recovered"] == 2, soak
    assert "tether, 2 cuts of 1-2 s: worst restore" in soak
