"""keep_outputs on a Slurm profile: what a cell printed before its job ended is in the
notebook on disk once the job is gone (README: Clusters).

`tether down` cancels the job; Slurm sends SIGTERM to the job's processes and SIGKILL
KillWait (30 s) later. Jupyter's shutdown stops jupyter-server-documents' rooms, which
save what they have; job.sh forwards the signal and waits for Jupyter. Real JupyterLab
in headless Chromium, through the forward into the job, runs a cell printing a line a
second; the job is cancelled after some lines; the file on the shared home must hold
every line up to the end, in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_tether.provision.spec import KEEP_OUTPUTS
from testing.cluster import Cluster
from testing.envs import make_jupyter_env
from testing.helpers import browser
from testing.helpers.cli import Tether
from testing.helpers.users import as_user, home_of
from tests.test_outputs_e2e import (
    EXPECTED,
    NOTEBOOK,
    make_root,
    new_browser,
    open_notebook,
    output_text,
    printed_lines,
    profiles,
    read_notebook,
    run_first_cell,
)

pytest.importorskip("selenium.webdriver")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not browser.available(), reason="chromium and chromium-driver needed"),
]

__all__ = ["profiles"]  # the fixture, shared with the single-server tests

PROFILE = "hpc-outputs"
PRINTED = "printed.txt"


@pytest.fixture
def job_root(tether: Tether, lab: Cluster, remote_user: str) -> Iterator[Path]:
    """A root dir with the printing notebook; whatever job is left is cancelled after."""
    root = make_root(remote_user, "tt-job-outputs")
    # The printing cell, which also appends each line to a file once it has printed it
    # (ipykernel's flush returns once the line is on its way to Jupyter): the lines the
    # kernel printed before it was ended, to hold the notebook to.
    nb = json.loads((root / NOTEBOOK).read_text())
    nb["cells"][0]["source"] = (
        f"import time\nfor i in range({len(EXPECTED)}):\n"
        '    print(f"line {i}", flush=True)\n'
        f"    with open({str(root / PRINTED)!r}, 'a') as f:\n"
        '        f.write(f"line {i}\\n")\n'
        "    time.sleep(1)"
    )
    made = as_user(remote_user, ["sh", "-c", f"cat > {root / NOTEBOOK}"], input=json.dumps(nb))
    assert made.returncode == 0, made.stderr
    env = make_jupyter_env(
        remote_user, home_of(remote_user) / "jlab-outputs", packages=(*KEEP_OUTPUTS, "ipykernel")
    )
    tether.profile(
        PROFILE,
        ssh=lab.alias(remote_user),
        env=str(env),
        root_dir=str(root),
        keep_outputs=True,
        scheduler="slurm",
        slurm={"time": "10"},
    )
    yield root
    tether("down", PROFILE)
    lab.as_user(remote_user, ["scancel", "-u", remote_user])
    as_user(remote_user, ["rm", "-rf", str(root)])


def test_lines_printed_before_the_job_ends_are_on_disk(
    tether: Tether, lab: Cluster, remote_user: str, job_root: Path, profiles: list[Path]
) -> None:
    res = tether("up", PROFILE, "--json", "--no-browser")
    assert res.rc == 0, res.err + res.out
    info: dict[str, Any] = json.loads(res.out)
    assert not info["notes"], info["notes"]  # the env has the tested set
    job = info["job"]["id"]
    token = info["url"].split("token=")[1]
    url = f"http://127.0.0.1:{info['local_port']}/lab/tree/{NOTEBOOK}?token={token}"

    driver, _ = new_browser(profiles)
    try:
        open_notebook(driver, url)
        run_first_cell(driver)
        browser.wait_for("line 5 in the page", lambda: "line 5" in output_text(driver), 60)
        seen = [t for t in output_text(driver).splitlines() if t.startswith("line ")]
        down = tether("down", PROFILE)
    finally:
        driver.quit()
    assert down.rc == 0, down.err
    assert f"cancelled job {job}" in down.err

    live = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"}
    browser.wait_for(
        "the job to end",
        lambda: not [j for j in lab.squeue(int(job)) if j.state in live],
        seconds=60,
    )
    # No execution count: the kernel ended before its reply, as the cell never finished.
    lines, _ = printed_lines(read_notebook(job_root))
    printed = (job_root / PRINTED).read_text().splitlines()
    # Every line the kernel had printed when it was ended (it may have printed one more
    # and been ended before noting it).
    assert lines[: len(printed)] == printed and len(lines) <= len(printed) + 1, (printed, lines)
    assert len(seen) >= 6 and lines[: len(seen)] == seen, (seen, lines)  # none the page saw lost
    assert lines == EXPECTED[: len(lines)], lines  # in order, each once
    assert len(lines) < len(EXPECTED), lines  # the job ended before the cell did
