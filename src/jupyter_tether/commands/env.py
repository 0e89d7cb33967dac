"""`tether env HOST [--rebuild]`: the managed environment: where, which Python, what's in it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jupyter_tether import config, output, probe, provision, ssh, state
from jupyter_tether.errors import ExitCode, TetherError


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
        if started and not any(r.ssh == profile.ssh for r in state.all_records()):
            ssh.exit_master(target)


def env_prefix(profile: config.Profile, found: probe.Probe) -> str:
    """The environment ``up`` would use: the profile's own, else the managed one."""
    if profile.env:
        return profile.env
    spec = provision.spec_for(profile, found)
    return f"{provision.data_dir(found)}/envs/{provision.env_name(profile, spec)}"


def env(
    name: str,
    *,
    ssh_config: Path | None = None,
    rebuild: bool = False,
    as_json: bool = False,
    verbose: bool = False,
) -> int:
    profile = config.resolve(name)
    if rebuild and profile.env:
        raise TetherError(
            f"profile {profile.name} brings its own environment ({profile.env}); "
            "tether only rebuilds environments it manages",
            hint=f"remove `env` from [hosts.{profile.name}] to let tether manage one",
            code=ExitCode.USAGE,
        )
    progress = output.Progress(verbose=verbose, quiet=as_json)
    with connected(profile, ssh_config, progress) as (target, found):
        if rebuild:
            prefix = provision.ensure(target, profile, found, progress=progress, force=True)
        else:
            prefix = env_prefix(profile, found)
        info: dict[str, Any] = provision.call(target, found, {"op": "describe", "env": prefix})
    if not info["exists"]:
        raise TetherError(
            f"{profile.ssh}: no environment for the current spec of {profile.name} yet ({prefix})",
            hint=f"`tether up {profile.name}` or `tether env {profile.name} --rebuild` builds it",
            code=ExitCode.NOT_FOUND,
        )
    marker = info.get("marker") or {}
    if as_json:
        output.emit_json({**info, "managed": bool(marker), "timings": progress.timings})
        return ExitCode.OK
    print(f"env:         {info['env']}")
    print(
        f"managed:     {'yes, spec ' + str(marker.get('spec')) if marker else 'no (profile env)'}"
    )
    print(f"python:      {info.get('python')} ({marker.get('python') or 'bin/python'})")
    print(f"size:        {info.get('size_mb')} MB")
    if marker:
        print(
            "installed:   "
            + ("offline, from wheels sent by tether" if marker.get("offline") else "from the index")
        )
    if marker.get("added"):
        print(f"added later: {', '.join(marker['added'])} (by `tether install`; not in the spec)")
    packages = info.get("packages") or []
    print(f"packages:    {len(packages)}")
    for pkg, version in packages:
        print(f"  {pkg}=={version}")
    return ExitCode.OK
