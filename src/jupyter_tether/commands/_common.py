"""Pieces several subcommands share: a server's record and ssh target, and a connection."""

from __future__ import annotations

import contextlib
import getpass
import socket
from collections.abc import Iterator
from pathlib import Path

from jupyter_tether import config, mount, output, probe, provision, ssh, state
from jupyter_tether.clients import Agent
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


def workstation() -> str:
    """user@host of this workstation, as a server-side marker names it to others."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container with a bare uid)
        user = "?"
    return f"{user}@{socket.gethostname()}"


def release_master(target: Target) -> None:
    """End the ControlMaster unless a recorded server or a mount still goes through it."""
    if target.destination in mount.destinations():
        return
    if not any(r.ssh == target.destination for r in state.all_records()):
        ssh.exit_master(target)


@contextlib.contextmanager
def connected(
    profile: config.Profile, ssh_config: Path | None, progress: output.Progress
) -> Iterator[tuple[ssh.Target, probe.Probe]]:
    """Connect and probe; a master started here goes again unless a server uses it."""
    target = ssh.make_target(profile.ssh, config_file=ssh_config)
    with progress.phase("connect", profile.ssh):
        started = ssh.ensure_master(target)
    try:
        with progress.phase("probe"):
            found = probe.probe(target)
        yield target, found
    finally:
        if started:
            release_master(target)


def env_prefix(profile: config.Profile, found: probe.Probe) -> str:
    """The environment ``up`` would use: the profile's own, else the managed one."""
    if profile.env:
        return profile.env
    spec = provision.spec_for(profile, found)
    return f"{provision.data_dir(found)}/envs/{provision.env_name(profile, spec)}"


@contextlib.contextmanager
def agent_for(
    profile: config.Profile, ssh_config: Path | None, *, verbose: bool = False
) -> Iterator[Agent]:
    """The agent on the profile's server: under the Python the recorded server runs on,
    or (none is recorded here) under a Python >= 3.8 the probe finds there."""
    rec = state.load(profile.name)
    if rec is not None:
        target = target_for(rec, ssh_config)
        ssh.ensure_master(target)
        yield Agent(target, rec.python)
        return
    progress = output.Progress(verbose=verbose, quiet=True)
    with connected(profile, ssh_config, progress) as (target, found):
        yield Agent(target, agent_python(found, profile.name))


def agent_python(found: probe.Probe, name: str) -> str:
    """A Python >= 3.8 on the server for the agent (no server is recorded to ask)."""
    for python in found.pythons:
        if python.version >= (3, 8):
            return python.path
    raise TetherError(
        f"{found.hostname} has no Python 3.8 or newer for tether's helper",
        hint=f"`tether up {name}` provisions one; then try again",
        code=ExitCode.REMOTE_ENV,
    )
