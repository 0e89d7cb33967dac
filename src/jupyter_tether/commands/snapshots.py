"""`tether snapshots`: the snapshots keep_outputs keeps of notebooks, and putting one
back (README: Snapshots; the server side is remote/snapshots.py)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from jupyter_tether import output, probe, ssh, state
from jupyter_tether.clients import Agent
from jupyter_tether.commands._common import connected, target_for
from jupyter_tether.config import check_name, resolve
from jupyter_tether.errors import ExitCode, TetherError


def snapshots(
    name: str,
    path: str | None = None,
    *,
    restore: str | None = None,
    ssh_config: Path | None = None,
    as_json: bool = False,
    verbose: bool = False,
) -> int:
    check_name(name)
    profile = resolve(name)
    rec = state.load(name)
    with contextlib.ExitStack() as stack:
        if rec is not None:
            target = target_for(rec, ssh_config)
            ssh.ensure_master(target)
            python = rec.python  # the Python Jupyter runs on
        else:
            progress = output.Progress(verbose=verbose, quiet=True)
            target, found = stack.enter_context(connected(profile, ssh_config, progress))
            python = _agent_python(found, name)
        agent = Agent(target, python)
        if restore is not None:
            done = agent.restore_snapshot(
                profile.root_dir, path, restore, keep=profile.snapshot_keep
            )
        else:
            listed = agent.snapshots(profile.root_dir, path)
    if restore is not None:
        if as_json:
            output.emit_json(dict(done))
        else:
            print(f"restored {done['path']} from snapshot {done['restored']}")
            if done["saved_as"]:
                print(f"  what was there is snapshot {done['saved_as']}")
        return ExitCode.OK
    if as_json:
        output.emit_json(dict(listed))
        return ExitCode.OK
    if not listed["snapshots"]:
        where = f" of {path}" if path else ""
        print(f"no snapshots{where} under {listed['root_dir']}")
        if not profile.keep_outputs:
            print(f"  they are kept with keep_outputs = true in [hosts.{name}]")
        return ExitCode.OK
    for rel, kept in listed["snapshots"].items():
        rows = [
            {
                "id": s["id"],
                "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["time"])),
                "size": str(s["size"]),
                "cells": "?" if s["cells"] is None else str(s["cells"]),
            }
            for s in kept
        ]
        print(rel)
        print(output.table(rows, ["id", "time", "size", "cells"]))
    return ExitCode.OK


def _agent_python(found: probe.Probe, name: str) -> str:
    """A Python >= 3.8 on the server for the agent (no server is recorded to ask)."""
    for python in found.pythons:
        if python.version >= (3, 8):
            return python.path
    raise TetherError(
        f"{found.hostname} has no Python 3.8 or newer to read snapshots with",
        hint=f"`tether up {name}` provisions one",
        code=ExitCode.REMOTE_ENV,
    )
