"""Pieces several subcommands share: finding a server's record and its ssh target."""

from __future__ import annotations

from pathlib import Path

from jupyter_tether import state
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.ssh import Target, make_target


def record_or_fail(name: str) -> state.Record:
    rec = state.load(name)
    if rec is None:
        known = ", ".join(r.name for r in state.all_records()) or "none"
        raise TetherError(
            f"no server called {name!r} is known here (known: {known})",
            hint=f"start it with `tether up {name}`",
            code=ExitCode.NOT_FOUND,
        )
    return rec


def target_for(rec: state.Record, ssh_config: Path | None = None) -> Target:
    cfg = ssh_config or (Path(rec.ssh_config) if rec.ssh_config else None)
    return make_target(rec.ssh, config_file=cfg)


def agent_python(rec: state.Record) -> str:
    return rec.python
