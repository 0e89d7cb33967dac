"""`tether env HOST [--rebuild]`: the managed environment: where, which Python, what's in it."""

from __future__ import annotations

from pathlib import Path

from jupyter_tether import config, output, provision
from jupyter_tether.commands._common import connected, env_prefix
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.provision import builder_calls


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
        info = builder_calls.describe(target, found, prefix)
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
