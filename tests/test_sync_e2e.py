"""`tether sync` against a real sshd and, where a notebook is open, a real Jupyter:
round trip, conflicts, clock skew, deletions, backups, torn writes."""

from __future__ import annotations

import http.client
import inspect
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
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
    put(sshd, "made-there.ipynb", notebook("server", 2))
    (local / "made-here.py").write_text("x = 1\n")
    rc, pair = run_sync(tether)
    assert rc == 0 and pair["pulled"] == ["made-there.ipynb"] and pair["pushed"] == ["made-here.py"]
    assert (local / "made-there.ipynb").read_text() == notebook("server", 2)
    assert read(sshd, "made-here.py") == "x = 1\n"
    settle()
    rc, pair = run_sync(tether)
    assert rc == 0 and not pair["pulled"] and not pair["pushed"]
    assert {a["action"] for a in pair["actions"]} == {"same"}

    # Edited on both sides: nothing overwritten, both versions kept, exit 12, and
    # nbdime's merge of the two (each side edited its own cell) offered beside them.
    mine, theirs = json.loads(notebook("server", 2)), json.loads(notebook("server", 2))
    mine["cells"][0]["source"] = "laptop"
    theirs["cells"][1]["source"] = "server, again"
    (local / "made-there.ipynb").write_text(json.dumps(mine))
    put(sshd, "made-there.ipynb", json.dumps(theirs))
    rc, pair = run_sync(tether)
    assert rc == 12
    ((path, beside),) = [(c["path"], c["server_version"]) for c in pair["conflicts"]]
    assert path == "made-there.ipynb" and ".remote-" in beside
    assert (local / "made-there.ipynb").read_text() == json.dumps(mine)
    assert (local / beside).read_text() == json.dumps(theirs)
    assert read(sshd, "made-there.ipynb") == json.dumps(theirs)
    (merged,) = pair["merged"]
    assert merged["path"] == path and ".merged-" in merged["candidate"], pair
    assert merged["conflicts"] == 0 and "conflicts" not in merged["candidate"]
    cells = json.loads((local / merged["candidate"]).read_text())["cells"]
    assert ["".join(c["source"]) for c in cells] == ["laptop", "server, again"]
    # The user settles it by taking the merged candidate.
    (local / merged["candidate"]).replace(local / "made-there.ipynb")
    (local / beside).unlink()
    rc, pair = run_sync(tether)
    assert rc == 0 and pair["pushed"] == ["made-there.ipynb"]
    on_disk = json.loads(read(sshd, "made-there.ipynb") or "{}")
    assert ["".join(c["source"]) for c in on_disk["cells"]] == ["laptop", "server, again"]
    settle()

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


@pytest.mark.netns
def test_sync_watch_in_the_supervisor_pushes_at_once_catches_up_and_records_a_conflict(
    tether: Tether, topology: SandboxTopology, jupyter_env: Path, tmp_path: Path
) -> None:
    from jupyter_tether import jupyter_api, supervisor

    local = tmp_path / "proj"
    local.mkdir()
    pair = {"local": str(local), "remote": REMOTE}
    tether.profile("tt-far", env=str(jupyter_env), sync=[pair], sync_watch=True)
    prog = f"import shutil; shutil.rmtree({REMOTE!r}, ignore_errors=True)"
    done = topology.ssh_config.ssh("tt-far", f"python3 -c {shlex.quote(prog)}", timeout=60)
    assert done.returncode == 0, done.stderr
    res = tether("up", "tt-far", "--no-browser", "--json")
    assert res.rc == 0, res.err
    info = json.loads(res.out)
    port, token = int(info["local_port"]), info["url"].split("token=")[1]

    def on_server(rel: str) -> str | None:
        """The server's copy, read through the forward (Jupyter's contents API)."""
        try:
            code, body = jupyter_api.request(
                port, "GET", f"/api/contents/{REMOTE}/{rel}?type=file&format=text", token
            )
        except jupyter_api.Unreachable:
            return None
        return str(json.loads(body)["content"]) if code == 200 else None

    def until(what: str, check: Any, seconds: float) -> float:
        """Poll ``check`` (bounded); return when it first held."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if check():
                return time.monotonic()
            time.sleep(0.05)
        log = supervisor.log_path("tt-far").read_text()[-3000:]
        pytest.fail(f"{what} did not happen within {seconds:.0f} s; supervisor log:\n{log}")

    def sync_word() -> str:
        return str((supervisor.read_status("tt-far") or {}).get("sync"))

    try:
        until("the first sync", lambda: sync_word() == "in sync", 60)
        written = time.monotonic()
        (local / "a.txt").write_text("edited on the laptop\n")
        seen = until("a.txt on the server", lambda: on_server("a.txt"), 10)
        assert seen - written < 2.0, f"the edit took {seen - written:.2f} s to reach the server"
        assert on_server("a.txt") == "edited on the laptop\n"

        topology.topology.cut()
        try:
            until(
                "the cut noticed",
                lambda: (supervisor.read_status("tt-far") or {}).get("state") == "reconnecting",
                30,
            )
            (local / "b.txt").write_text("written during the cut\n")
        finally:
            topology.topology.restore()
        until("b.txt on the server after the restore", lambda: on_server("b.txt"), 30)
        assert on_server("b.txt") == "written during the cut\n"
        assert on_server("a.txt") == "edited on the laptop\n"  # nothing lost
        assert (local / "a.txt").read_text() == "edited on the laptop\n"
        assert "sync caught up after the reconnect" in supervisor.log_path("tt-far").read_text()

        # Both sides change c.txt before the next sync: the local edit keeps size and
        # mtime (so only the next poll of the server notices), the server's is older
        # than syncing.SETTLE so it is ready to read.
        (local / "c.txt").write_text("one\n")
        until("c.txt on the server", lambda: on_server("c.txt"), 10)
        before = (local / "c.txt").stat()
        (local / "c.txt").write_text("two\n")
        os.utime(local / "c.txt", ns=(before.st_atime_ns, before.st_mtime_ns))
        edit = f"open({REMOTE + '/c.txt'!r}, 'w').write('six\\n'); import os, time; " + (
            f"t = time.time() - 60; os.utime({REMOTE + '/c.txt'!r}, (t, t))"
        )
        done = topology.ssh_config.ssh("tt-far", f"python3 -c {shlex.quote(edit)}", timeout=60)
        assert done.returncode == 0, done.stderr
        until("the conflict recorded", lambda: sync_word() == "conflict in c.txt", 20)
        ls = tether("ls")
        assert "sync: conflict in c.txt" in ls.out, ls.out
        # Neither side overwritten; the server's version beside, once, across polls.
        time.sleep(supervisor.SYNC_POLL + 1)  # one more poll, which must not add a copy
        assert (local / "c.txt").read_text() == "two\n" and on_server("c.txt") == "six\n"
        besides = sorted(p.name for p in local.glob("c.remote-*.txt"))
        assert len(besides) == 1 and (local / besides[0]).read_text() == "six\n"
        # The supervisor carries on: still connected, and a new edit still goes up.
        (local / "d.txt").write_text("after the conflict\n")
        until("d.txt on the server", lambda: on_server("d.txt"), 10)
        assert (supervisor.read_status("tt-far") or {}).get("state") == "connected"
        # Still a small process, with one thread more than without sync_watch.
        status = Path(f"/proc/{info['supervisor']}/status").read_text()
        rss = int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1])
        threads = int(next(x for x in status.splitlines() if x.startswith("Threads:")).split()[1])
        # Under `make test` coverage traces every subprocess (pyproject.toml: patch =
        # subprocess), and its tracer's data adds several MiB to the supervisor.
        limit = 40 if "COVERAGE_PROCESS_CONFIG" in os.environ else 30
        assert rss <= limit * 1024, f"the supervisor uses {rss} KiB (limit {limit} MiB)"
        assert threads <= 8, f"the supervisor runs {threads} threads"
    finally:
        topology.topology.restore()
        tether("down", "tt-far", "--purge")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from testing.helpers import browser as chromium

    if not chromium.available():
        pytest.skip("chromium and chromium-driver are not installed")
    profile = Path(tempfile.mkdtemp(prefix="tt-chromium-"))
    driver = chromium.chromium(profile)
    try:
        yield driver
    finally:
        try:
            driver.save_screenshot(str(tmp_path / "file-changed.png"))  # the CI artifact
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)


def test_a_forced_push_under_an_open_tab_makes_lab_ask_before_saving(
    tether: Tether, sshd: LocalSshd, synced: Path, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from testing.helpers.browser import wait_for

    driver = browser
    nb = json.loads(notebook("server"))
    nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    try:
        res = tether("up", NAME, "--no-browser", "--json")
        assert res.rc == 0, res.err
        info = json.loads(res.out)
        port, token = int(info["local_port"]), info["url"].split("token=")[1]
        put(sshd, "open.ipynb", json.dumps(nb))
        assert run_sync(tether)[1]["pulled"] == ["open.ipynb"]
        driver.get(f"http://127.0.0.1:{port}/lab/tree/{REMOTE}/open.ipynb?token={token}")
        wait_for(
            "the notebook's cell in the tab",
            lambda: (
                "server 0"
                in driver.find_element(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content").text
            ),
            seconds=120,
        )
        nb["cells"][0]["source"] = "laptop 0"
        (synced / "open.ipynb").write_text(json.dumps(nb))
        # Open in a tab (its session is live): refused without --force, nothing written.
        wait_for(
            "the tab's session",
            lambda: "open in Jupyter" in run_sync(tether)[1]["not_synced"].get("open.ipynb", ""),
            seconds=30,
        )
        assert json.loads(read(sshd, "open.ipynb") or "{}")["cells"][0]["source"] == "server 0"
        _rc, pair = run_sync(tether, "--force")
        assert pair["pushed"] == ["open.ipynb"]
        assert any(b.startswith("server: ") for b in pair["backups"])
        assert json.loads(read(sshd, "open.ipynb") or "{}")["cells"][0]["source"] == "laptop 0"
        # Saving from the tab now: Lab sees the file changed on disk since it was
        # opened (its mtime is the push's) and asks, rather than writing over it.
        driver.find_element(By.CSS_SELECTOR, ".jp-Notebook").click()
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.CONTROL, "s")
        dialog = wait_for(
            "Lab's File Changed dialog",
            lambda: driver.find_element(By.CSS_SELECTOR, ".jp-Dialog"),
            seconds=30,
        )
        assert "File Changed" in dialog.text and "has changed on disk" in dialog.text, dialog.text
        time.sleep(1)  # were Lab to save regardless, it would have by now
        assert json.loads(read(sshd, "open.ipynb") or "{}")["cells"][0]["source"] == "laptop 0"
        # "Revert" takes the pushed version into the tab.
        dialog.find_element(By.XPATH, ".//button[contains(., 'Revert')]").click()
        wait_for(
            "the pushed version in the tab",
            lambda: (
                "laptop 0"
                in driver.find_element(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content").text
            ),
            seconds=30,
        )
        assert json.loads(read(sshd, "open.ipynb") or "{}")["cells"][0]["source"] == "laptop 0"
    finally:
        tether("down", NAME)


def hashes_on_server(sshd: LocalSshd) -> dict[str, str]:
    """path -> SHA-256 of every file in the server's synced folder."""
    out = on_server(
        sshd,
        "import hashlib, json\nfound = {}\n"
        "for d, _, fs in os.walk('.'):\n"
        "    for f in fs:\n"
        "        p = os.path.join(d, f)\n"
        "        found[os.path.relpath(p)] = hashlib.sha256(open(p, 'rb').read()).hexdigest()\n"
        "print(json.dumps(found))",
    )
    return dict(json.loads(out))


def hashes_here(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): syncing.digest(p.read_bytes())
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_a_tree_moves_by_rsync_and_lands_only_when_complete(
    tether: Tether, sshd: LocalSshd, synced: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from jupyter_tether import transfer

    local = synced
    # More files than the agent carries: names with a space, a newline, a quote.
    names = [f"d{k % 3}/sub dir/f {k}.txt" for k in range(26)]
    names += ["new\nline.txt", "it's.py", "nb.ipynb"]
    for k, rel in enumerate(names):
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_text(notebook("here") if rel.endswith(".ipynb") else f"v1 {k}\n")
    assert len(names) > transfer.MANY_FILES
    _, pair = run_sync(tether)
    assert pair["transfer"] == "rsync", pair
    assert sorted(pair["pushed"]) == sorted(names)
    assert hashes_on_server(sshd) == hashes_here(local)
    (manifest,) = (Path(tether.config_path).parents[1] / "state" / "sync" / NAME).glob(
        "*/manifest.json"
    )
    assert json.loads(manifest.read_text())["files"] == hashes_here(local)
    settle()

    # Changed here: pushed by rsync over the server's copies, which go to its backups.
    changed = names[:21]
    for rel in changed:
        (local / rel).write_text(f"v2 {rel}\n")
    _, pair = run_sync(tether)
    assert pair["transfer"] == "rsync" and sorted(pair["pushed"]) == sorted(changed), pair
    assert hashes_on_server(sshd) == hashes_here(local)
    saved = [b[len("server: ") :] for b in pair["backups"] if b.startswith("server: ")]
    assert len(saved) == len(changed)
    first = next(s for s in saved if s.endswith("/d0/sub dir/f 0.txt"))
    assert on_server(sshd, f"print(open({first!r}).read(), end='')") == "v1 0\n"
    settle()

    # Changed on the server: pulled by rsync, the local copies backed up first; a file
    # being saved (its .~NAME beside it) or changed in the last seconds stays there.
    pulled = names[5:27]
    script = "import json, time\nt = time.time() - 60\n"
    script += f"for rel in {json.dumps(pulled)}:\n"
    script += "    open(rel, 'w').write('v3 ' + rel + '\\n'); os.utime(rel, (t, t))\n"
    script += "open('fresh.txt', 'w').write('just now\\n')\n"
    script += f"open('saving.ipynb', 'w').write({notebook('saving')!r})\n"
    script += "os.utime('saving.ipynb', (t, t))\n"
    script += "open('.~saving.ipynb', 'w').write('{')\n"
    on_server(sshd, script)
    _, pair = run_sync(tether)
    assert pair["transfer"] == "rsync" and sorted(pair["pulled"]) == sorted(pulled), pair
    for rel in pulled:
        assert (local / rel).read_text() == f"v3 {rel}\n"
    acts = {a["path"]: a["action"] for a in pair["actions"]}
    assert acts["fresh.txt"] == acts["saving.ipynb"] == "defer", acts
    assert not (local / "fresh.txt").exists() and not (local / "saving.ipynb").exists()
    here = [Path(b[len("here: ") :]) for b in pair["backups"] if b.startswith("here: ")]
    assert len(here) == len(pulled)
    assert {p.read_text() for p in here if p.name == "f 5.txt"} == {"v2 d2/sub dir/f 5.txt\n"}
    # Nothing staged is left on either side.
    staging = "os.path.expanduser('~/.local/state/jupyter-tether/sync-staging')"
    assert on_server(sshd, f"print(os.listdir({staging}))") == "[]\n"
    assert not any(manifest.parent.glob("incoming/*"))
    settle()

    # No rsync here: the agent carries the same tree, and says why.
    bare = tmp_path / "bin-without-rsync"
    bare.mkdir()
    ssh_binary = shutil.which("ssh")
    assert ssh_binary is not None
    (bare / "ssh").symlink_to(ssh_binary)
    monkeypatch.setenv("PATH", str(bare))
    for rel in names[:22]:
        (local / rel).write_text(f"v4 {rel}\n")
    _, pair = run_sync(tether)
    assert pair["transfer"] == "agent", pair
    assert pair["transfer_note"] == "rsync is not installed here"
    assert sorted(pair["pushed"]) == sorted(names[:22])
    server = hashes_on_server(sshd)
    assert all(server[rel] == syncing.digest(f"v4 {rel}\n".encode()) for rel in names[:22])
