"""`tether sync`: the profile's folder pairs, once, both ways (README: Syncing notebooks)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from jupyter_tether import config, output, ssh
from jupyter_tether.clients import Agent
from jupyter_tether.commands._common import agent_for
from jupyter_tether.config import check_name, develop_pairs, resolve
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.sync import Outcome, signature, sync_pair

SHOWN = ("push", "pull", "conflict", "keep-local", "keep-remote", "defer", "skip")


def sync(
    name: str,
    *,
    ssh_config: Path | None = None,
    dry_run: bool = False,
    force: bool = False,
    as_json: bool = False,
    verbose: bool = False,
    watch: bool = False,
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
    with agent_for(profile, ssh_config, verbose=verbose) as agent:
        if watch:
            return _watch(name, profile, agent, force=force)
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


WATCH_LOOK = 0.5  # seconds between two looks at the local folders
WATCH_POLL = 5.0  # seconds between two syncs when nothing changed here (the server's side)


def _watch(name: str, profile: config.Profile, agent: Agent, *, force: bool) -> int:
    """Sync whenever a local folder changes, and every WATCH_POLL s for the server's
    changes; a lost link is retried until it is back, and the next sync catches up."""
    # A lost link is noticed by the master's ServerAlive; a new one must not wait long.
    agent.target = dataclasses.replace(agent.target, connect_timeout=5)
    folders = [Path(pair.local).expanduser() for pair in profile.sync]
    print(f"watching {', '.join(map(str, folders))} for {name}; Ctrl-C stops", flush=True)
    seen: tuple[int, ...] | None = None
    last = 0.0
    lost = False
    reported: dict[str, tuple[str, str]] = {}  # conflicts already written beside their file
    try:
        while True:
            now_seen = tuple(signature(f) for f in folders)
            due = lost or now_seen != seen or time.monotonic() - last >= WATCH_POLL
            if due:
                last = time.monotonic()
                try:
                    ssh.ensure_master(agent.target, batch=True)
                    for pair in profile.sync:
                        o = sync_pair(
                            agent, name, pair, profile.root_dir, force=force, reported=reported
                        )
                        reported.update(o.conflicted)
                        _print_moves(pair.local, pair.remote, o)
                except TetherError as exc:
                    if not lost:
                        print(f"sync paused: {exc.message}; trying again", flush=True)
                    lost = True
                else:
                    if lost:
                        print("link back: caught up", flush=True)
                    lost, seen = False, now_seen
            time.sleep(1.0 if lost else WATCH_LOOK)
    except KeyboardInterrupt:
        print("stopped watching", flush=True)
        return ExitCode.OK


def _print_moves(local: str, remote: str, o: Outcome) -> None:
    stamp = time.strftime("%H:%M:%S")
    for path in o.pushed:
        print(f"{stamp} pushed {path} to {remote}", flush=True)
    for path in o.pulled:
        print(f"{stamp} pulled {path} into {local}", flush=True)
    for path, beside in o.conflicts:
        print(f"{stamp} conflict: {path}; the server's version is {beside}", flush=True)
    for path, candidate, left in o.merged:
        print(f"{stamp} merged candidate for {path}: {candidate}{_left(left)}", flush=True)
    for path, why in o.not_merged.items():
        print(f"{stamp} no merged candidate for {path}: {why}", flush=True)
    for path, why in o.refused.items():
        print(f"{stamp} not synced: {path}: {why}", flush=True)


def _left(conflicts: int) -> str:
    if not conflicts:
        return " (both sides' changes, no conflicts: check it, then rename it over yours)"
    return f" ({conflicts} conflict(s) marked by nbdime in the cells: resolve them first)"


def _as_dict(local: str, remote: str, o: Outcome) -> dict[str, object]:
    return {
        "local": local,
        "remote": remote,
        "actions": [{"path": a.path, "action": a.what, "why": a.why} for a in o.actions],
        "pushed": o.pushed,
        "pulled": o.pulled,
        "conflicts": [{"path": p, "server_version": b} for p, b in o.conflicts],
        "merged": [{"path": p, "candidate": c, "conflicts": n} for p, c, n in o.merged],
        "not_merged": o.not_merged,
        "not_synced": o.refused,
        "backups": o.backups,
        "transfer": o.transfer,  # "rsync" or "agent"; None when nothing moved
        "transfer_note": o.transfer_note,
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
        by = " (by rsync)" if o.transfer == "rsync" else ""
        print(f"  pushed {len(o.pushed)}, pulled {len(o.pulled)}, conflicts {len(o.conflicts)}{by}")
    if o.transfer_note:
        print(f"  not all by rsync: {o.transfer_note}")
    for path, beside in o.conflicts:
        print(f"  conflict: {path} changed on both sides; the server's version is {beside}")
    for path, candidate, left in o.merged:
        print(f"  merged candidate for {path}: {candidate}{_left(left)}")
    for path, why in o.not_merged.items():
        print(f"  no merged candidate for {path}: {why}")
    for path, why in o.refused.items():
        print(f"  not synced: {path}: {why}")
    for saved in o.backups:
        print(f"  backup: {saved}")
