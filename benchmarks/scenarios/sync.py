"""Sync a tree of many small files and some notebooks to the server, cold and unchanged.

tether: `tether sync NAME` of a profile whose one folder pair is the tree (over the
rsync threshold, so the bytes go by rsync: ``jupyter_tether/transfer.py``), once into
an empty server folder with no manifest (cold), then once more with nothing changed;
and cold with no rsync on the workstation's PATH, so the agent carries every byte.
Baseline: plain ``rsync -a`` of the same tree over ssh to the same account, cold and
then unchanged. Both ride one ssh master, started here at tether's control path, so no
figure includes a login.

tether does more than rsync -a for the same result: it hashes every file on both sides
(it decides by content, never by mtime), reads the server's files only when complete,
and writes each one through a check and a backup (README: Syncing notebooks).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from benchmarks.bench import Bench, TetherRun
from benchmarks.registry import Figure, NotMeasured, Outcome, scenario
from benchmarks.sizes import Sizes
from jupyter_tether import ssh
from jupyter_tether.remote import syncing

NAME = "tb-sync"  # a profile of its own, on the main bench account
TETHER_DIR = "bench-sync-tether"  # on the server, relative to the home
RSYNC_DIR = "bench-sync-rsync"


def _notebook(k: int) -> str:
    """A notebook of ~50 KB: 20 cells, each with a text output."""
    cells = [
        {
            "cell_type": "code",
            "execution_count": i,
            "metadata": {},
            "source": f"print('notebook {k}, cell {i}')",
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "x" * 2400 + "\n"}],
        }
        for i in range(20)
    ]
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def _tree(root: Path, files: int, notebooks: int) -> Path:
    """``files`` files of 200 B to 2 KB in 20 directories, ``notebooks`` notebooks."""
    for i in range(files):
        path = root / f"dir{i % 20:02d}" / f"file{i:04d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# file {i}\n" + "x = 1\n" * (30 + i % 300))
    for k in range(notebooks):
        (root / "notebooks").mkdir(exist_ok=True)
        (root / "notebooks" / f"nb{k:02d}.ipynb").write_text(_notebook(k))
    return root


def _master(bench: Bench, stack: contextlib.ExitStack) -> ssh.Target:
    """One ssh master at tether's control path, which tether and rsync -a both ride."""
    runtime = Path(bench.tether_env["JUPYTER_TETHER_RUNTIME_DIR"])
    (runtime / "cm").mkdir(mode=0o700, parents=True, exist_ok=True)
    target = ssh.Target(bench.main_host, config_file=bench.ssh_config, control_dir=runtime / "cm")
    started = subprocess.run(
        target.master_argv(batch=True), capture_output=True, text=True, timeout=60, check=False
    )
    if started.returncode != 0:
        raise NotMeasured(f"no ssh master: {started.stderr.strip()[-300:]}")
    stack.callback(
        subprocess.run, target.control_argv("exit"), capture_output=True, timeout=30, check=False
    )
    return target


def _bare_path(bench: Bench) -> Path:
    """A PATH directory with ssh and no rsync: tether's agent carries the bytes."""
    bare = bench.workdir / "bin-without-rsync"
    if not bare.exists():
        bare.mkdir()
        found = shutil.which("ssh")
        if found is None:
            raise NotMeasured("no ssh on PATH")
        (bare / "ssh").symlink_to(found)
    return bare


def _clean(bench: Bench) -> None:
    """Cold: no server folders, no manifest or backups of tether's for the profile."""
    done = bench.ssh(bench.main_host, f"rm -rf {TETHER_DIR} {RSYNC_DIR}", timeout=60)
    if done.returncode != 0:
        raise NotMeasured(f"cannot empty the server's folders: {done.stderr.strip()[-300:]}")
    state = Path(bench.tether_env["JUPYTER_TETHER_STATE_DIR"])
    for sub in ("sync", "backups"):
        shutil.rmtree(state / sub / NAME, ignore_errors=True)


def _sync(
    bench: Bench, count: int, *, moved: int, via: str, env: dict[str, str] | None = None
) -> float:
    run: TetherRun = bench.tether("sync", NAME, "--json", timeout=600, env=env)
    if run.rc != 0:
        raise NotMeasured(f"tether sync: {run.error_line()}")
    (pair,) = json.loads(run.out)
    if len(pair["pushed"]) != moved or (moved and pair.get("transfer") != via):
        raise NotMeasured(
            f"tether sync pushed {len(pair['pushed'])} of {count} files by "
            f"{pair.get('transfer')} ({pair.get('transfer_note')}), not {moved} by {via}"
        )
    return run.seconds


def _rsync_a(bench: Bench, target: ssh.Target, tree: Path) -> float:
    rsh = shlex.join(
        [
            "ssh",
            "-F",
            str(bench.ssh_config),
            "-o",
            f"ControlPath={target.control_dir}/%C",
            "-o",
            "ControlMaster=no",
        ]
    )
    start = time.monotonic()
    done = subprocess.run(
        ["rsync", "-a", "-e", rsh, f"{tree}/", f"{bench.main_host}:{RSYNC_DIR}/"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise NotMeasured(f"rsync -a failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return seconds


@scenario("sync", "`tether sync` of many small files and notebooks, cold and unchanged")
def sync(bench: Bench, sizes: Sizes) -> Outcome:
    out = Outcome()
    if shutil.which("rsync") is None:
        raise NotMeasured("rsync is not installed here")
    count = sizes.sync_files + sizes.sync_notebooks
    what = f"{sizes.sync_files} files + {sizes.sync_notebooks} notebooks"
    base_cold = Figure(f"rsync -a: {what}, cold", "s")
    base_same = Figure(f"rsync -a: {what}, nothing changed", "s")
    cold = Figure(f"tether sync (rsync): {what}, cold", "s", versus=base_cold.name)
    same = Figure(f"tether sync: {what}, nothing changed", "s", versus=base_same.name)
    agent = Figure(f"tether sync (agent only): {what}, cold", "s", versus=base_cold.name)

    tree = bench.resource(
        "tree",
        lambda stack: _tree(bench.workdir / "sync-tree", sizes.sync_files, sizes.sync_notebooks),
    )
    bench.profile(
        NAME,
        ssh=bench.main_host,
        env=str(bench.env),
        sync=[{"local": str(tree), "remote": TETHER_DIR}],
    )
    target = bench.resource("master", lambda stack: _master(bench, stack))

    _clean(bench)
    out.add(base_cold, _rsync_a(bench, target, tree))
    out.add(base_same, _rsync_a(bench, target, tree))
    out.add(cold, _sync(bench, count, moved=count, via="rsync"))
    # What was just written on the server is "changed in the last 2 s" (not read yet);
    # nothing changed means: after that.
    time.sleep(syncing.SETTLE + 0.5)
    out.add(same, _sync(bench, count, moved=0, via="rsync"))

    _clean(bench)
    out.add(
        agent, _sync(bench, count, moved=count, via="agent", env={"PATH": str(_bare_path(bench))})
    )
    return out
