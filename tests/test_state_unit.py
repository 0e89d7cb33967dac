"""Local records: typed fields, 0600 files, and records written by older versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jupyter_tether import state


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JUPYTER_TETHER_STATE_DIR", str(tmp_path))
    return tmp_path


BASE: dict[str, Any] = {
    "name": "aura",
    "ssh": "aura",
    "ssh_config": None,
    "token": "0" * 48,
    "local_port": 40213,
    "remote": "/tmp/jupyter-tether-1000/aura/jupyter.sock",
    "app": "lab",
    "pid": 4242,
    "hostname": "aura.example.edu",
    "started": 1.0,
}


def test_round_trip_is_private(state_dir: Path) -> None:
    rec = state.Record(**BASE, python="/env/bin/python", rundir="/run/x", installed=("toolz",))
    state.save(rec)
    path = state.path_for("aura")
    assert path.stat().st_mode & 0o777 == 0o600
    assert state.load("aura") == rec
    assert json.loads(path.read_text())["installed"] == ["toolz"]


def test_a_record_from_an_older_version_still_loads(state_dir: Path) -> None:
    old = {
        **BASE,
        "transport": "socket",
        "extra": {
            "python": "/env/bin/python",
            "rundir": "/run/x",
            "launcher": "tmux",
            "installed": ["toolz"],
        },
    }
    state.path_for("aura").parent.mkdir(parents=True)
    state.path_for("aura").write_text(json.dumps(old))
    rec = state.load("aura")
    assert rec is not None
    assert (rec.python, rec.rundir, rec.launcher, rec.installed) == (
        "/env/bin/python",
        "/run/x",
        "tmux",
        ("toolz",),
    )


def test_defaults_and_garbage(state_dir: Path) -> None:
    state.path_for("aura").parent.mkdir(parents=True)
    state.path_for("aura").write_text(json.dumps(BASE))
    rec = state.load("aura")
    assert rec is not None and rec.python == "python3" and rec.installed == ()
    state.path_for("aura").write_text("[1, 2]")
    assert state.load("aura") is None
