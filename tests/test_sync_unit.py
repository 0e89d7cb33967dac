"""`tether sync`'s decisions (by content, three-way) and the server side's rules, here."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest

from jupyter_tether import sync
from jupyter_tether.config import SyncPair, resolve
from jupyter_tether.errors import TetherError
from jupyter_tether.remote import syncing


def what(actions: list[sync.Action]) -> dict[str, str]:
    return {a.path: a.what for a in actions}


def test_each_case_of_the_three_way_decision() -> None:
    base = {
        "same": "a",
        "here": "a",
        "there": "a",
        "both": "a",
        "gone-here": "a",
        "gone-there": "a",
        "gone-both": "a",
        "del-vs-edit": "a",
        "edit-vs-del": "a",
    }
    local = {
        "same": "a",
        "here": "b",
        "there": "a",
        "both": "b",
        "gone-there": "a",
        "new-here": "n",
        "edit-vs-del": "b",
        "new-both": "x",
        "new-equal": "e",
    }
    remote = {
        "same": "a",
        "here": "a",
        "there": "c",
        "both": "c",
        "gone-here": "a",
        "new-there": "m",
        "del-vs-edit": "c",
        "new-both": "y",
        "new-equal": "e",
    }
    assert what(sync.decide(local, remote, base)) == {
        "same": "same",
        "here": "push",
        "there": "pull",
        "both": "conflict",
        "gone-here": "keep-remote",  # deleted here: never deleted there
        "gone-there": "keep-local",
        "del-vs-edit": "pull",  # the edit wins over the deletion: nothing is lost
        "edit-vs-del": "push",
        "new-here": "push",
        "new-there": "pull",
        "new-both": "conflict",
        "new-equal": "same",
    }  # "gone-both" has nothing left to do


def test_a_deferred_file_is_left_for_later_whatever_the_hashes() -> None:
    actions = sync.decide(
        {"nb.ipynb": "b"}, {"nb.ipynb": "c"}, {"nb.ipynb": "a"}, {"nb.ipynb": "being saved"}
    )
    assert [(a.what, a.why) for a in actions] == [("defer", "on the server: being saved")]


@pytest.mark.parametrize(
    ("rel", "hit"),
    [
        (".ipynb_checkpoints/nb-checkpoint.ipynb", True),
        ("sub/.ipynb_checkpoints/x.ipynb", True),
        ("sub/__pycache__/m.cpython-311.pyc", True),
        (".~nb.ipynb", True),
        ("sub/.~nb.ipynb", True),
        (".git/config", True),
        ("nb.ipynb", False),
        ("src/pkg/mod.py", False),
    ],
)
def test_default_excludes(rel: str, hit: bool) -> None:
    assert syncing.excluded(rel, sync.DEFAULT_EXCLUDE) is hit


def test_the_servers_version_goes_beside_with_its_extension() -> None:
    assert sync._beside("a/nb.ipynb", "STAMP") == "a/nb.remote-STAMP.ipynb"
    assert sync._beside("README", "STAMP") == "README.remote-STAMP"


def test_scan_hashes_content_and_skips_large_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "big.bin").write_bytes(b"x" * 2000)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "a-checkpoint.txt").write_text("old")
    files, skipped = sync.scan(tmp_path, sync.DEFAULT_EXCLUDE, 1000)
    assert files == {"a.txt": syncing.digest(b"one")}
    assert list(skipped) == ["big.bin"]


def test_profiles_read_and_check_sync_pairs(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[hosts.aura]\nsync = [{ local = "~/p", remote = "p", exclude = ["*.csv"] }]\n')
    pair = resolve("aura", config_path=cfg).sync[0]
    assert (pair.local, pair.remote, pair.exclude, pair.max_size_mb) == (
        "~/p",
        "p",
        ("*.csv",),
        50.0,
    )
    cfg.write_text('[hosts.aura]\nsync = [{ local = "~/p" }]\n')
    with pytest.raises(TetherError, match=r"config.toml:2: .*sync"):
        resolve("aura", config_path=cfg)
    assert resolve("aura", config_path=tmp_path / "none.toml").sync_watch is False
    cfg.write_text('[hosts.aura]\nsync = [{ local = "~/p", remote = "p" }]\nsync_watch = true\n')
    assert resolve("aura", config_path=cfg).sync_watch is True
    cfg.write_text('[hosts.aura]\nsync_watch = "yes"\n')
    with pytest.raises(TetherError, match=r"sync_watch = 'yes': must be true or false"):
        resolve("aura", config_path=cfg)


# --- the server's side ----------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    (tmp_path / "proj").mkdir()
    return tmp_path


def old(path: Path, seconds: float = 60) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def listing(home: Path) -> dict[str, object]:
    return syncing.op_sync_list({"remote": "proj", "root_dir": str(home), "max_size": 0})


def test_only_complete_files_are_offered(home: Path) -> None:
    proj = home / "proj"
    (proj / "done.ipynb").write_text(json.dumps({"cells": []}))
    (proj / "saving.ipynb").write_text("{")
    (proj / ".~saving.ipynb").write_text(json.dumps({"cells": []}))
    (proj / "torn.ipynb").write_text('{"cells": [')
    (proj / "fresh.py").write_text("x = 1\n")
    for name in ("done.ipynb", "saving.ipynb", ".~saving.ipynb", "torn.ipynb"):
        old(proj / name)
    got = listing(home)
    assert list(got["files"]) == ["done.ipynb"]  # type: ignore[call-overload]
    deferred = got["deferred"]
    assert isinstance(deferred, dict)
    assert "being saved" in deferred["saving.ipynb"]
    assert "does not parse" in deferred["torn.ipynb"]
    assert "last 2 s" in deferred["fresh.py"]


def test_a_write_backs_up_what_it_replaces_and_refuses_a_changed_file(home: Path) -> None:
    proj = home / "proj"
    (proj / "a.txt").write_text("server")
    old(proj / "a.txt")
    new = b"laptop"
    item = {"data": base64.b64encode(new).decode(), "sha256": syncing.digest(new)}
    req = {"name": "aura", "remote": "proj", "root_dir": str(home)}
    stale = syncing.op_sync_write(dict(req, files={"a.txt": dict(item, expect="not-it")}))
    assert stale["changed"] == ["a.txt"] and (proj / "a.txt").read_text() == "server"
    done = syncing.op_sync_write(
        dict(req, files={"a.txt": dict(item, expect=syncing.digest(b"server"))})
    )
    assert done["written"] == ["a.txt"] and (proj / "a.txt").read_bytes() == new
    (saved,) = done["backups"]
    assert Path(saved).read_text() == "server"


def test_a_path_outside_the_folder_is_refused(home: Path) -> None:
    from jupyter_tether.remote.core import RemoteError

    with pytest.raises(RemoteError):
        syncing.op_sync_read({"remote": "proj", "root_dir": str(home), "paths": {"../x": "h"}})


def _notebook(*sources: str) -> bytes:
    cells = [
        # sources as lists of lines, as Jupyter writes them
        {"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": s.splitlines(True)}
        | {"outputs": []}
        | {"execution_count": None}
        for i, s in enumerate(sources)
    ]
    nb = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb).encode()


def _sources(data: bytes) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(data)["cells"]]


def test_a_three_way_merge_of_edits_to_different_cells_keeps_both() -> None:
    from jupyter_tether import merge

    base = _notebook("a = 1\nz = 0", "b = 2", "c = 3")
    mine = _notebook("a = 10\nz = 0", "b = 2", "c = 3")
    theirs = _notebook("a = 1\nz = 0", "b = 2", "c = 30")
    result = merge.merge_notebooks(base, mine, theirs)
    assert result.conflicts == 0
    assert _sources(result.data) == ["a = 10\nz = 0", "b = 2", "c = 30"]


def test_a_conflicted_notebook_gets_a_candidate_with_markers_beside_it(tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    folder.mkdir()
    pair = resolve_pair(folder)
    place = sync.Place("aura", pair)
    base = _notebook("x = 1", "y = 1")
    place.keep_version(base)
    (folder / "nb.ipynb").write_bytes(_notebook("x = 2", "y = 5"))
    out = sync.Outcome([])
    sync._offer_merge(
        place, folder, "nb.ipynb", syncing.digest(base), _notebook("x = 3", "y = 1"), "S", out
    )
    ((path, candidate, conflicts),) = out.merged
    assert (path, candidate) == ("nb.ipynb", "nb.merged-conflicts-S.ipynb") and conflicts >= 1
    text = (folder / candidate).read_text()
    # nbdime's inline markers, and the edit only this side made (y = 5) merged in.
    assert "<<<<<<< local" in text and ">>>>>>> remote" in text and "y = 5" in text
    assert _sources((folder / "nb.ipynb").read_bytes()) == ["x = 2", "y = 5"]  # untouched


def test_without_a_base_or_nbdime_the_output_says_why_no_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_tether import merge

    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "nb.ipynb").write_bytes(_notebook("x = 2"))
    place = sync.Place("aura", resolve_pair(folder))
    out = sync.Outcome([])
    sync._offer_merge(place, folder, "nb.ipynb", None, _notebook("x = 3"), "S", out)
    assert "no common version" in out.not_merged["nb.ipynb"]
    base = _notebook("x = 1")
    place.keep_version(base)
    # nbdime absent: the only failure here that cannot be made for real in one venv.
    monkeypatch.setattr(merge, "available", lambda: False)
    sync._offer_merge(place, folder, "nb.ipynb", syncing.digest(base), _notebook("x = 3"), "S", out)
    assert out.not_merged["nb.ipynb"] == merge.MISSING and "jupyter-tether[merge]" in merge.MISSING
    assert out.merged == [] and sorted(p.name for p in folder.iterdir()) == ["nb.ipynb"]


def resolve_pair(folder: Path) -> SyncPair:
    return SyncPair(local=str(folder), remote="proj")
