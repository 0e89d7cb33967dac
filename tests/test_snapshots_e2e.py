"""keep_outputs' safety net end to end: snapshots of notebooks, taken inside the real
Jupyter (jupyter-server-documents, the managed environment tether provisions on a
fresh account), listed and restored with `tether snapshots`.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.helpers.cli import Tether
from testing.helpers.users import as_user, home_of
from tests.conftest import IS_ROOT, PROV_USER

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not IS_ROOT, reason="a fresh account and its own sshd need root"),
]

NOTEBOOK = "kept.ipynb"
SNAPSHOTS = ".tether-snapshots"
PRINTED = ["out-one\n", "out-two\n"]
FREE_EVERY = 3  # seconds: YRoomManager.auto_free_interval (300 by default)


def notebook(*cells: tuple[str, str]) -> dict[str, Any]:
    """A notebook of code cells given as (id, source), no outputs."""
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": cid,
                "metadata": {},
                "outputs": [],
                "source": source,
            }
            for cid, source in cells
        ],
        "metadata": {
            "kernelspec": {
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "name": "python3",
            }
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.fixture
def root() -> Iterator[Path]:
    """A root_dir in the fresh account's home with one notebook: print("out-" + "one")."""
    path = home_of(PROV_USER) / "tt-snapshots"
    as_user(PROV_USER, ["rm", "-rf", str(path)])
    assert as_user(PROV_USER, ["mkdir", str(path)]).returncode == 0
    text = json.dumps(notebook(("first", 'print("out-" + "one")')))
    made = as_user(PROV_USER, ["sh", "-c", f"cat > {path}/{NOTEBOOK}"], input=text)
    assert made.returncode == 0, made.stderr
    yield path
    as_user(PROV_USER, ["rm", "-rf", str(path)])


def up(ptether: Tether, host: str, root: Path, **keys: object) -> dict[str, Any]:
    ptether.profile(host, root_dir=str(root), keep_outputs=True, offline=True, **keys)
    res = ptether("up", host, "--no-browser", "--json")
    assert res.rc == 0, res.err
    info: dict[str, Any] = json.loads(res.out)
    info["token"] = info["url"].split("token=")[1]
    return info


def read_notebook(path: Path) -> dict[str, Any]:
    """A notebook file, read again while a save has it half-written (bounded)."""
    for _ in range(50):
        try:
            nb: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return nb
        except ValueError:
            time.sleep(0.1)
    raise AssertionError(f"{path} did not become readable JSON within 5 s")


def outputs_of(nb: dict[str, Any]) -> dict[str, str]:
    """cell id -> the text its outputs printed."""
    found = {}
    for cell in nb["cells"]:
        text = ""
        for out in cell.get("outputs", []):
            chunk = out.get("text", "")
            text += chunk if isinstance(chunk, str) else "".join(chunk)
        found[cell["id"]] = text
    return found


def printed(nb: dict[str, Any]) -> list[str]:
    """What the first two cells printed."""
    return list(outputs_of(nb).values())[:2]


def sources_of(nb: dict[str, Any]) -> list[str]:
    return [
        c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in nb["cells"]
    ]


def listed(ptether: Tether, host: str) -> list[dict[str, Any]]:
    res = ptether("snapshots", host, NOTEBOOK, "--json")
    assert res.rc == 0, res.err
    kept: list[dict[str, Any]] = json.loads(res.out)["snapshots"].get(NOTEBOOK, [])
    return kept


def snapshot_file(root: Path, sid: str) -> dict[str, Any]:
    return read_notebook(root / SNAPSHOTS / NOTEBOOK / f"{sid}.ipynb")


def put(info: dict[str, Any], nb: dict[str, Any]) -> int:
    """Save ``nb`` through Jupyter's contents API: the save path every client takes."""
    conn = http.client.HTTPConnection("127.0.0.1", info["local_port"], timeout=30)
    try:
        body = json.dumps({"type": "notebook", "content": nb})
        headers = {"Authorization": f"token {info['token']}", "Content-Type": "application/json"}
        conn.request("PUT", f"/api/contents/{NOTEBOOK}", body=body, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


# --------------------------------------------------------------------------- restore


def test_restore_puts_a_snapshot_back_and_keeps_the_current_file(
    ptether: Tether, prov_sshd: str, root: Path
) -> None:
    info = up(ptether, prov_sshd, root, snapshot_every=0)  # every changing save
    assert listed(ptether, prov_sshd) == []
    first = notebook(("first", "a = 1"))
    second = notebook(("first", "a = 1"), ("second", "b = 2"))
    assert put(info, first) == 200
    assert put(info, second) == 200
    kept = listed(ptether, prov_sshd)
    assert len(kept) == 2  # the file as it was before each save, newest first
    assert kept[0]["cells"] == 1 and kept[1]["cells"] == 1
    assert sources_of(snapshot_file(root, kept[0]["id"])) == ["a = 1"]
    assert sources_of(snapshot_file(root, kept[1]["id"])) == ['print("out-" + "one")']
    mode = (root / SNAPSHOTS / NOTEBOOK / f"{kept[0]['id']}.ipynb").stat().st_mode & 0o777
    assert mode == 0o600

    original = kept[1]["id"]
    res = ptether("snapshots", prov_sshd, "--restore", original, "--json")
    assert res.rc == 0, res.err
    done = json.loads(res.out)
    assert done["path"] == NOTEBOOK and done["restored"] == original
    assert sources_of(read_notebook(root / NOTEBOOK)) == ['print("out-" + "one")']
    # What was there (the two-cell save) became a snapshot first.
    assert sources_of(snapshot_file(root, done["saved_as"])) == ["a = 1", "b = 2"]
    assert listed(ptether, prov_sshd)[0]["id"] == done["saved_as"]

    # Jupyter serves the restored file.
    conn = http.client.HTTPConnection("127.0.0.1", info["local_port"], timeout=30)
    conn.request(
        "GET", f"/api/contents/{NOTEBOOK}", headers={"Authorization": f"token {info['token']}"}
    )
    served = json.loads(conn.getresponse().read())
    conn.close()
    assert sources_of(served["content"]) == ['print("out-" + "one")']

    res = ptether("snapshots", prov_sshd)  # the table
    assert res.rc == 0 and done["saved_as"] in res.out and original in res.out
    res = ptether("snapshots", prov_sshd, "--restore", "20000101T000000.000000Z")
    assert res.rc == 9, res.err  # no such snapshot: NOT_FOUND
