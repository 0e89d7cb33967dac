"""`tether snapshots`: the snapshots keep_outputs keeps of notebooks, and putting one
back (README: Snapshots; the server side is remote/snapshots.py)."""

from __future__ import annotations

import time
from pathlib import Path

from jupyter_tether import output
from jupyter_tether.commands._common import agent_for
from jupyter_tether.config import check_name, resolve
from jupyter_tether.errors import ExitCode


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
    with agent_for(profile, ssh_config, verbose=verbose) as agent:
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
