"""`tether sync` against a real sshd and, where a notebook is open, a real Jupyter:
round trip, conflicts, clock skew, deletions, backups, torn writes."""

from __future__ import annotations

import http.client
import inspect
import json
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from jupyter_tether.remote import syncing
from testing.helpers.cli import Tether
from tests.conftest import LocalSshd, SandboxTopology

pytestmark = pytest.mark.e2e

NAME = "tt-server"
REMOTE = "tt-sync-proj"


def notebook(text: str, cells: int = 1) -> str:
    cell: dict[str, Any] = {
        "cell_type": "code",
        "metadata": {},
        "outputs": [],
        "execution_count": None,
    }
    return json.dumps(
        {
            "cells": [dict(cell, source=f"{text} {k}") for k in range(cells)],
            "metadata": {},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


def on_server(sshd: LocalSshd, script: str, *, stdin: str = "") -> str:
    """Run ``script`` (Python) as the server's account, in the synced folder."""
    prog = f"import os; os.makedirs({REMOTE!r}, exist_ok=True); os.chdir({REMOTE!r})\n{script}"
    res = sshd.ssh_config.ssh(NAME, f"python3 -c {shlex.quote(prog)}", timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def put(sshd: LocalSshd, rel: str, text: str, *, age: float = 60) -> None:
    """A file on the server, last changed ``age`` seconds ago (negative: in the future)."""
    on_server(
        sshd,
        f"import time\nopen({rel!r}, 'w').write({text!r})\n"
        f"t = time.time() - {age}\nos.utime({rel!r}, (t, t))",
    )


def read(sshd: LocalSshd, rel: str) -> str | None:
    out = on_server(sshd, f"print(open({rel!r}).read() if os.path.exists({rel!r}) else '\\0')")
    text = out[:-1]
    return None if text == "\0" else text


@pytest.fixture
def synced(tether: Tether, sshd: LocalSshd, jupyter_env: Path, tmp_path: Path) -> Path:
    local = tmp_path / "proj"
    local.mkdir()
    tether.profile(NAME, env=str(jupyter_env), sync=[{"local": str(local), "remote": REMOTE}])
    # A clean folder and no backups from an earlier test on the server.
    backups = f"~/.local/state/jupyter-tether/backups/{NAME}"
    on_server(
        sshd,
        f"import shutil; os.chdir('..'); shutil.rmtree({REMOTE!r})\n"
        f"shutil.rmtree(os.path.expanduser({backups!r}), ignore_errors=True)",
    )
    return local


def run_sync(tether: Tether, *more: str) -> tuple[int, dict[str, Any]]:
    res = tether("sync", NAME, "--json", *more)
    assert res.rc in (0, 12), res.err
    (pair,) = json.loads(res.out)
    return res.rc, pair


def settle() -> None:
    """What the server just received is "changed in the last 2 s" (not read) until then."""
    time.sleep(syncing.SETTLE + 0.5)


def aged(path: Path, age: float = 60) -> None:
    import os

    t = time.time() - age
    os.utime(path, (t, t))


def test_round_trip_conflict_skew_deletions_and_backups(
    tether: Tether, sshd: LocalSshd, synced: Path
) -> None:
    local = synced
    # A notebook made on the server appears here; a local edit appears there.
    put(sshd, "made-there.ipynb", notebook("server"))
    (local / "made-here.py").write_text("x = 1\n")
    rc, pair = run_sync(tether)
    assert rc == 0 and pair["pulled"] == ["made-there.ipynb"] and pair["pushed"] == ["made-here.py"]
    assert (local / "made-there.ipynb").read_text() == notebook("server")
    assert read(sshd, "made-here.py") == "x = 1\n"
    settle()
    rc, pair = run_sync(tether)
    assert rc == 0 and not pair["pulled"] and not pair["pushed"]
    assert {a["action"] for a in pair["actions"]} == {"same"}

    # Edited on both sides: nothing overwritten, both versions kept, exit 12.
    (local / "made-there.ipynb").write_text(notebook("laptop"))
    put(sshd, "made-there.ipynb", notebook("server, again"))
    rc, pair = run_sync(tether)
    assert rc == 12
    ((path, beside),) = [(c["path"], c["server_version"]) for c in pair["conflicts"]]
    assert path == "made-there.ipynb" and ".remote-" in beside
    assert (local / "made-there.ipynb").read_text() == notebook("laptop")
    assert (local / beside).read_text() == notebook("server, again")
    assert read(sshd, "made-there.ipynb") == notebook("server, again")
    # The user settles it by keeping the server's version.
    (local / "made-there.ipynb").write_text(notebook("server, again"))
    (local / beside).unlink()
    assert run_sync(tether)[0] == 0

    # Clock skew: the server's file says it was changed an hour from now, the local one
    # an hour ago; only the content decides. Then the other way round.
    put(sshd, "made-here.py", "x = 2\n", age=-3600)
    aged(local / "made-here.py", 3600)
    rc, pair = run_sync(tether)
    assert pair["pulled"] == ["made-here.py"] and (local / "made-here.py").read_text() == "x = 2\n"
    (local / "made-here.py").write_text("x = 3\n")
    aged(local / "made-here.py", 7200)
    put(sshd, "made-here.py", "x = 2\n", age=-7200)  # same content, touched in the future
    rc, pair = run_sync(tether)
    assert pair["pushed"] == ["made-here.py"] and read(sshd, "made-here.py") == "x = 3\n"
    backups = [b for b in pair["backups"] if b.startswith("server: ")]
    assert backups, pair  # what the push replaced on the server
    saved = on_server(sshd, f"print(open({backups[0][len('server: ') :]!r}).read(), end='')")
    assert saved == "x = 2\n"

    # The pull above replaced a local file: a backup of it exists here.
    pulled_backup = [b for b in pair["backups"] if b.startswith("here: ")]
    assert not pulled_backup  # (this sync pulled nothing)
    here = list((Path(tether.config_path).parents[1] / "state" / "backups" / NAME).rglob("*.py"))
    assert any(p.read_text() == "x = 1\n" for p in here), here

    # Deletions are never propagated.
    settle()
    (local / "made-here.py").unlink()
    on_server(sshd, "os.unlink('made-there.ipynb')")
    rc, pair = run_sync(tether)
    acts = {a["path"]: a["action"] for a in pair["actions"]}
    assert acts["made-here.py"] == "keep-remote" and acts["made-there.ipynb"] == "keep-local"
    assert read(sshd, "made-here.py") == "x = 3\n"
    assert (local / "made-there.ipynb").exists()

    # --dry-run writes nothing.
    (local / "new.txt").write_text("new\n")
    rc, pair = run_sync(tether, "--dry-run")
    assert {a["path"]: a["action"] for a in pair["actions"]}["new.txt"] == "push"
    assert read(sshd, "new.txt") is None


def test_a_notebook_saved_in_a_loop_on_the_server_is_only_ever_copied_whole(
    tether: Tether, sshd: LocalSshd, synced: Path, jupyter_env: Path
) -> None:
    """Jupyter's own atomic_writing (it rewrites the file in place, the old content in
    .~NAME meanwhile) in a loop, with pauses, while `sync` runs again and again."""
    versions = [notebook(f"version {k}", cells=400) for k in range(6)]
    writer = (
        "import json, random, time\n"
        "from jupyter_server.services.contents.fileio import atomic_writing\n"
        + inspect.getsource(notebook)
        + "for k in range(30):\n"
        "    with atomic_writing('big.ipynb', text=True) as f:\n"
        "        f.write(notebook(f'version {k % 6}', cells=400))\n"
        "    time.sleep(random.choice((0.0, 0.05, 0.3, 2.5)))\n"
    )
    python = jupyter_env / "bin" / "python"
    prog = f"import os; os.makedirs({REMOTE!r}, exist_ok=True); os.chdir({REMOTE!r})\n{writer}"
    done: dict[str, Any] = {}

    def write() -> None:
        res = sshd.ssh_config.ssh(NAME, f"{python} -c {shlex.quote(prog)}", timeout=300)
        done["rc"] = res.returncode
        done["err"] = res.stderr

    thread = threading.Thread(target=write)
    thread.start()
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 240
        while thread.is_alive() and time.monotonic() < deadline:
            rc, pair = run_sync(tether)
            copy = synced / "big.ipynb"
            if copy.exists():
                text = copy.read_text()
                assert text in versions, "a torn copy"
                json.loads(text)
                seen.add(text)
            # The local copy is never edited here: only pulls, never a conflict.
            assert rc == 0, pair
    finally:
        thread.join(timeout=300)
    assert done.get("rc") == 0, done
    rc, pair = run_sync(tether)  # after the last write has settled
    assert seen, "no sync ever found the notebook complete"


def test_a_push_over_an_open_notebook_needs_force(
    tether: Tether, sshd: LocalSshd, synced: Path
) -> None:
    try:
        res = tether("up", NAME, "--no-browser", "--json")
        assert res.rc == 0, res.err
        info = json.loads(res.out)
        port, token = int(info["local_port"]), info["url"].split("token=")[1]
        put(sshd, "open.ipynb", notebook("server"))
        assert run_sync(tether)[1]["pulled"] == ["open.ipynb"]
        body = {"path": f"{REMOTE}/open.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
        conn.request("POST", "/api/sessions", body=json.dumps(body), headers=headers)
        assert conn.getresponse().status == 201
        conn.close()
        (synced / "open.ipynb").write_text(notebook("laptop"))
        _, pair = run_sync(tether)
        assert "open in Jupyter" in pair["not_synced"]["open.ipynb"]
        assert read(sshd, "open.ipynb") == notebook("server")
        _rc, pair = run_sync(tether, "--force")
        assert pair["pushed"] == ["open.ipynb"] and read(sshd, "open.ipynb") == notebook("laptop")
        assert any(b.startswith("server: ") for b in pair["backups"])
    finally:
        tether("down", NAME)


def test_backups_restore_an_overwritten_file_on_either_side(
    tether: Tether, sshd: LocalSshd, synced: Path
) -> None:
    local = synced
    put(sshd, "a.txt", "first\n")
    (local / "b.txt").write_text("first\n")
    run_sync(tether)
    settle()
    put(sshd, "a.txt", "second\n")  # pulled over the local copy
    (local / "b.txt").write_text("second\n")  # pushed over the server's copy
    _, pair = run_sync(tether)
    assert pair["pulled"] == ["a.txt"] and pair["pushed"] == ["b.txt"]
    res = tether("backups", NAME, "--json")
    assert res.rc == 0, res.err
    listed = {(b["side"], Path(b["path"]).name): b["id"] for b in json.loads(res.out)}
    assert set(listed) == {("here", "a.txt"), ("server", "b.txt")}
    res = tether("backups", NAME, "--restore", listed[("here", "a.txt")])
    assert res.rc == 0, res.err
    assert (local / "a.txt").read_text() == "first\n"
    res = tether("backups", NAME, "--restore", listed[("server", "b.txt")])
    assert res.rc == 0, res.err
    assert read(sshd, "b.txt") == "first\n"
    # What each restore replaced is a backup in its turn.
    after = [
        (b["side"], Path(b["path"]).name) for b in json.loads(tether("backups", NAME, "--json").out)
    ]
    assert after.count(("here", "a.txt")) == 2 and after.count(("server", "b.txt")) == 2
    missing = tether("backups", NAME, "--restore", "here:nope/x/y")
    assert missing.rc == 9 and "tether backups" in missing.err


@pytest.mark.netns
def test_watch_pushes_an_edit_at_once_and_catches_up_after_a_cut(
    tether: Tether, topology: SandboxTopology, jupyter_env: Path, tmp_path: Path
) -> None:
    local = tmp_path / "proj"
    local.mkdir()
    tether.profile("tt-far", env=str(jupyter_env), sync=[{"local": str(local), "remote": REMOTE}])

    def far(script: str) -> str:
        prog = f"import os; os.makedirs({REMOTE!r}, exist_ok=True); os.chdir({REMOTE!r})\n{script}"
        res = topology.ssh_config.ssh("tt-far", f"python3 -c {shlex.quote(prog)}", timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout

    far(f"import shutil; os.chdir('..'); shutil.rmtree({REMOTE!r})")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_tether", "sync", "tt-far", "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(
        target=lambda: lines.extend((time.monotonic(), line) for line in proc.stdout or ()),
        daemon=True,
    )
    reader.start()

    def said(word: str, after: float, seconds: float) -> float:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for at, line in list(lines):
                if at >= after and word in line:
                    return at
            time.sleep(0.05)
        pytest.fail(f"watch did not say {word!r} within {seconds:.0f} s: {lines}")

    try:
        said("watching", 0.0, 60)
        time.sleep(1)
        written = time.monotonic()
        (local / "a.txt").write_text("edited on the laptop\n")
        pushed = said("pushed a.txt", written, 10)
        assert pushed - written < 2.0, f"the edit took {pushed - written:.2f} s to reach the server"
        assert far("print(open('a.txt').read(), end='')") == "edited on the laptop\n"
        topology.topology.cut()
        try:
            (local / "b.txt").write_text("written during the cut\n")
            said("sync paused", written, 40)
        finally:
            topology.topology.restore()
        back = time.monotonic()
        said("pushed b.txt", back, 60)
        said("caught up", back, 60)
        assert far("print(open('b.txt').read(), end='')") == "written during the cut\n"
        assert (local / "a.txt").read_text() == "edited on the laptop\n"  # nothing lost
    finally:
        topology.topology.restore()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
