"""`tether sync`: the profile's folder pairs, once, both ways (README: Syncing notebooks)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from jupyter_tether import output, probe, ssh, state
from jupyter_tether.clients import Agent
from jupyter_tether.commands._common import connected, target_for
from jupyter_tether.config import check_name, develop_pairs, resolve
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.sync import Outcome, sync_pair

SHOWN = ("push", "pull", "conflict", "keep-local", "keep-remote", "defer", "skip")


def sync(
    name: str,
    *,
    ssh_config: Path | None = None,
    dry_run: bool = False,
    force: bool = False,
    as_json: bool = False,
    verbose: bool = False,
) -> int:
    check_name(name)
    profile = resolve(name)
    # develop folders too: an editable install needs nothing more for a changed .py file
    pairs = (*profile.sync, *develop_pairs(profile))
    if not pairs:
        raise TetherError(
            f"the profile {name!r} has no folders to sync",
            hint=f'add sync = [{{ local = "~/work/proj", remote = "proj" }}] to [hosts.{name}]',
            code=ExitCode.CONFIG,
        )
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
        outcomes = [
            (
                pair.local,
                pair.remote,
                sync_pair(agent, name, pair, profile.root_dir, dry_run=dry_run, force=force),
            )
            for pair in pairs
        ]
    if as_json:
        output.emit_json([_as_dict(local, remote, o) for local, remote, o in outcomes])
    else:
        for local, remote, o in outcomes:
            _print(local, remote, o, dry_run=dry_run, verbose=verbose)
    conflicts = [path for _, _, o in outcomes for path, _ in o.conflicts]
    if conflicts or (
        dry_run and any(a.what == "conflict" for _, _, o in outcomes for a in o.actions)
    ):
        return ExitCode.CONFLICT
    return ExitCode.OK


def _as_dict(local: str, remote: str, o: Outcome) -> dict[str, object]:
    return {
        "local": local,
        "remote": remote,
        "actions": [{"path": a.path, "action": a.what, "why": a.why} for a in o.actions],
        "pushed": o.pushed,
        "pulled": o.pulled,
        "conflicts": [{"path": p, "server_version": b} for p, b in o.conflicts],
        "not_synced": o.refused,
        "backups": o.backups,
    }


def _print(local: str, remote: str, o: Outcome, *, dry_run: bool, verbose: bool) -> None:
    rows = [
        {"path": a.path, "action": a.what, "why": a.why}
        for a in o.actions
        if verbose or a.what in SHOWN
    ]
    print(f"{local} <-> {remote}" + (" (dry run: nothing written)" if dry_run else ""))
    print(output.table(rows, ["path", "action", "why"]) if rows else "  in sync")
    if not dry_run:
        print(f"  pushed {len(o.pushed)}, pulled {len(o.pulled)}, conflicts {len(o.conflicts)}")
    for path, beside in o.conflicts:
        print(f"  conflict: {path} changed on both sides; the server's version is {beside}")
    for path, why in o.refused.items():
        print(f"  not synced: {path}: {why}")
    for saved in o.backups:
        print(f"  backup: {saved}")


def _agent_python(found: probe.Probe, name: str) -> str:
    """A Python >= 3.8 on the server for the agent (no server is recorded to ask)."""
    for python in found.pythons:
        if python.version >= (3, 8):
            return python.path
    raise TetherError(
        f"{found.hostname} has no Python 3.8 or newer to sync with",
        hint=f"`tether up {name}` provisions one; then sync again",
        code=ExitCode.REMOTE_ENV,
    )
