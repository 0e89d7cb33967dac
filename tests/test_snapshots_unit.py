"""The snapshot rules of remote/snapshots.py, on real files in a temporary root dir:
when a save calls for a snapshot, how many are kept, and what a restore leaves."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_tether.remote import snapshots

NOTEBOOK = "work/a.ipynb"


def nb(*cells: tuple[str, int]) -> dict[str, Any]:
    """A notebook of code cells given as (id, number of outputs)."""
    return {
        "cells": [
            {
                "cell_type": "code",
                "id": cid,
                "source": cid,
                "metadata": {},
                "execution_count": None,
                "outputs": [{"output_type": "stream", "name": "stdout", "text": "x"}] * n,
            }
            for cid, n in cells
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "work").mkdir()
    saved = dict(snapshots.settings)
    snapshots.settings.update(every=300.0, keep=20)
    yield tmp_path
    snapshots.settings.clear()
    snapshots.settings.update(saved)


def on_disk(root: Path, content: dict[str, Any]) -> None:
    (root / NOTEBOOK).write_text(json.dumps(content), encoding="utf-8")


def kept(root: Path) -> list[str]:
    return snapshots.ids(snapshots.snapshot_dir(str(root), NOTEBOOK))


# --------------------------------------------------------------------------- pure rules


def test_ids_sort_by_time_and_never_collide() -> None:
    a = snapshots.new_id(1_000_000.5, [])
    b = snapshots.new_id(1_000_001.25, [])
    assert a < b
    assert snapshots.new_id(1_000_000.5, [a]) not in (a,)
    assert snapshots.new_id(1_000_000.5, [a]).startswith(a)


@pytest.mark.parametrize(
    ("count", "keep", "dropped"),
    [(0, 20, 0), (20, 20, 0), (21, 20, 1), (25, 20, 5), (3, 1, 2), (3, 0, 2)],
)
def test_to_drop_keeps_the_newest(count: int, keep: int, dropped: int) -> None:
    existing = [f"id{i:02d}" for i in range(count)]
    gone = snapshots.to_drop(existing, keep)
    assert gone == existing[:dropped]  # the oldest go first, at least one stays


def test_loses_a_cell_or_every_output() -> None:
    two = nb(("a", 1), ("b", 2))
    assert not snapshots.loses(two, nb(("a", 1), ("b", 2), ("c", 0)))  # added: nothing lost
    assert not snapshots.loses(two, nb(("b", 5), ("a", 1)))  # moved, re-run
    assert snapshots.loses(two, nb(("a", 1)))  # a cell gone
    assert snapshots.loses(two, nb(("a", 1), ("c", 2)))  # replaced by another id
    assert snapshots.loses(two, nb(("a", 0), ("b", 0)))  # every output gone
    assert snapshots.loses(two, {"cells": []})
    assert not snapshots.loses(nb(("a", 0)), nb(("a", 0)))


def test_loses_by_count_when_cells_have_no_ids() -> None:
    old = nb(("a", 0), ("b", 0))
    for cell in old["cells"]:
        del cell["id"]
    assert snapshots.loses(old, nb(("x", 0)))
    assert not snapshots.loses(old, nb(("x", 0), ("y", 0)))


def test_due() -> None:
    assert snapshots.due(None, 100.0, 300.0)
    assert not snapshots.due(100.0, 399.0, 300.0)
    assert snapshots.due(100.0, 400.0, 300.0)
    assert snapshots.due(100.0, 50.0, 300.0)  # the clock went back


def test_paths_outside_the_root_are_refused(root: Path) -> None:
    for bad in ("../x.ipynb", "a/../../x.ipynb", f"{snapshots.DIR}/a.ipynb"):
        with pytest.raises(ValueError):
            snapshots.snapshot_dir(str(root), bad)


# --------------------------------------------------------------------------- saves


def test_first_save_keeps_what_was_on_disk(root: Path) -> None:
    on_disk(root, nb(("a", 1)))
    before = (root / NOTEBOOK).read_bytes()
    sid = snapshots.before_save(str(root), NOTEBOOK, nb(("a", 1), ("b", 0)), now=1000.0)
    assert sid is not None and kept(root) == [sid]
    folder = Path(snapshots.snapshot_dir(str(root), NOTEBOOK))
    copy = folder / f"{sid}.ipynb"
    assert copy.read_bytes() == before
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    for d in (root / snapshots.DIR, folder):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_saves_within_the_interval_are_not_snapshotted(root: Path) -> None:
    on_disk(root, nb(("a", 0)))
    first = snapshots.before_save(str(root), NOTEBOOK, nb(("a", 1)))
    assert first is not None
    on_disk(root, nb(("a", 1)))
    assert snapshots.before_save(str(root), NOTEBOOK, nb(("a", 2))) is None
    assert kept(root) == [first]


def test_a_save_after_the_interval_is_snapshotted_first(root: Path) -> None:
    snapshots.settings["every"] = 0.0  # every save is "after an absence"
    on_disk(root, nb(("a", 0)))
    snapshots.before_save(str(root), NOTEBOOK, nb(("a", 1)))
    on_disk(root, nb(("a", 1)))
    second = snapshots.before_save(str(root), NOTEBOOK, nb(("a", 2)))
    assert second is not None and len(kept(root)) == 2
    folder = Path(snapshots.snapshot_dir(str(root), NOTEBOOK))
    assert json.loads((folder / f"{second}.ipynb").read_text()) == nb(("a", 1))


def test_an_unchanged_file_is_not_kept_twice(root: Path) -> None:
    snapshots.settings["every"] = 0.0
    on_disk(root, nb(("a", 1)))
    snapshots.before_save(str(root), NOTEBOOK, nb(("a", 1)))
    assert snapshots.before_save(str(root), NOTEBOOK, nb(("a", 1))) is None
    assert len(kept(root)) == 1


def test_a_losing_save_is_snapshotted_even_within_the_interval(root: Path) -> None:
    on_disk(root, nb(("a", 0)))
    snapshots.before_save(str(root), NOTEBOOK, nb(("a", 1), ("b", 1)))
    on_disk(root, nb(("a", 1), ("b", 1)))
    wiped = snapshots.before_save(str(root), NOTEBOOK, nb(("a", 0)))
    assert wiped is not None and len(kept(root)) == 2
    folder = Path(snapshots.snapshot_dir(str(root), NOTEBOOK))
    assert json.loads((folder / f"{wiped}.ipynb").read_text()) == nb(("a", 1), ("b", 1))


def test_retention_keeps_the_newest(root: Path) -> None:
    snapshots.settings.update(every=0.0, keep=3)
    made = []
    for i in range(6):
        on_disk(root, nb(("a", i)))
        sid = snapshots.before_save(str(root), NOTEBOOK, nb(("a", i + 1)), now=1000.0 + i)
        assert sid is not None
        made.append(sid)
    assert kept(root) == made[-3:]


def test_no_file_no_snapshot(root: Path) -> None:
    assert snapshots.before_save(str(root), NOTEBOOK, nb(("a", 0))) is None
    assert snapshots.before_save(str(root), "work/b.txt", None) is None
    assert not (root / snapshots.DIR).exists()


def test_the_hook_never_fails_a_save(root: Path) -> None:
    """A snapshot that cannot be written is logged, and the save goes on."""
    logged: list[str] = []

    class Log:
        def exception(self, msg: str, *args: object) -> None:
            logged.append(msg % args)

    class Manager:
        root_dir = str(root)
        log = Log()

    on_disk(root, nb(("a", 1)))
    (root / snapshots.DIR).write_text("not a directory")
    snapshots.pre_save_hook({"type": "notebook", "content": nb()}, NOTEBOOK, Manager())
    assert logged == [f"jupyter-tether: could not snapshot {NOTEBOOK} before saving it"]


def test_ids_carry_their_time() -> None:
    sid = snapshots.new_id(1_800_000_123.25, [])
    assert snapshots.id_time(sid) == pytest.approx(1_800_000_123.25, abs=1e-5)
    assert snapshots.id_time(sid + "-1") == snapshots.id_time(sid)
    assert snapshots.id_time("notes") is None


# --------------------------------------------------------------------------- restore


def test_restore_keeps_the_current_file_first(root: Path) -> None:
    snapshots.settings["every"] = 0.0
    on_disk(root, nb(("a", 1)))
    old = snapshots.before_save(str(root), NOTEBOOK, nb(("a", 1), ("b", 1)))
    assert old is not None
    on_disk(root, nb(("z", 0)))  # what a bad reconnect left
    listed = snapshots.listing(str(root), None)
    assert [s["id"] for s in listed[NOTEBOOK]] == [old]
    assert listed[NOTEBOOK][0]["cells"] == 1

    done = snapshots.restore(str(root), NOTEBOOK, old, keep=20)
    assert json.loads((root / NOTEBOOK).read_text()) == nb(("a", 1))
    saved = done["saved_as"]
    assert saved is not None and kept(root) == [old, saved]
    folder = Path(snapshots.snapshot_dir(str(root), NOTEBOOK))
    assert json.loads((folder / f"{saved}.ipynb").read_text()) == nb(("z", 0))
    assert snapshots.find(str(root), saved, None) == NOTEBOOK


def test_restore_at_the_limit_keeps_the_restored_one(root: Path) -> None:
    snapshots.settings.update(every=0.0, keep=2)
    made = []
    for i in range(2):
        on_disk(root, nb(("a", i)))
        sid = snapshots.before_save(str(root), NOTEBOOK, nb(("a", i + 1)), now=1000.0 + i)
        assert sid is not None
        made.append(sid)
    on_disk(root, nb(("a", 9)))
    done = snapshots.restore(str(root), NOTEBOOK, made[0], keep=2)
    assert made[0] in kept(root) and done["saved_as"] in kept(root)


# --------------------------------------------------------------------------- batch jobs


class _Section:
    pre_save_hook: Any = None


class _Config:
    """What the config file touches of traitlets' Config: one section."""

    def __init__(self) -> None:
        self.ContentsManager = _Section()


def test_a_batch_job_gets_the_hook_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: Path
) -> None:
    """A batch server's job.env puts the session's snapshot config dir on
    JUPYTER_CONFIG_PATH (before one of the profile's own), and that dir's config hooks
    saves with the profile's settings, as for a server of its own."""
    from jupyter_tether.remote import core, jobs, launching

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    p = core.JobPaths("hpc")
    os.makedirs(p.session)
    settings = {"every": 7.0, "keep": 3}
    req = {"env_vars": {"JUPYTER_CONFIG_PATH": "/site/etc"}, "snapshots": settings}
    env = jobs._job_env(req, p, ["jupyter", "lab"], {"path": "/usr/bin:/bin"})
    launching.write_snapshot_config(p.snapshot_config, settings)
    Path(p.job_env).write_text(env)
    shown = subprocess.run(
        ["bash", "-c", '. "$1" && printf %s "$JUPYTER_CONFIG_PATH"', "-", p.job_env],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"{p.snapshot_config}:/site/etc"
    assert stat.S_IMODE(os.stat(p.snapshot_config).st_mode) == 0o700

    c = _Config()
    config_py = Path(p.snapshot_config) / "jupyter_config.py"
    scope = {"get_config": lambda: c, "__file__": str(config_py)}
    exec(compile(config_py.read_text(), str(config_py), "exec"), scope)  # as traitlets does
    hook = c.ContentsManager.pre_save_hook
    assert callable(hook) and hook.__module__ == "tether_snapshots"
    on_disk(root, nb(("a", 1)))

    class Manager:
        root_dir = str(root)

    hook({"type": "notebook", "content": nb(("a", 1), ("b", 0))}, NOTEBOOK, Manager())
    assert len(kept(root)) == 1  # the first save keeps what was on disk

    without = jobs._job_env({"snapshots": None}, p, ["jupyter", "lab"], {"path": "/b"})
    assert "JUPYTER_CONFIG_PATH" not in without
    launching.write_snapshot_config(p.snapshot_config, None)
    assert not os.path.exists(p.snapshot_config)
