"""`tether install HOST PKG...`: add packages to the environment the server runs from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jupyter_tether import config, output, paths, provision, state
from jupyter_tether.commands._common import connected, env_prefix
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.provision import builder_calls


def install(
    name: str,
    packages: list[str],
    *,
    ssh_config: Path | None = None,
    verbose: bool = False,
) -> int:
    profile = config.resolve(name)
    clash = provision.keep_outputs_conflicts(packages) if profile.keep_outputs else []
    if clash:
        raise TetherError(
            f"{', '.join(clash)}: not beside keep_outputs, which runs cells with "
            "jupyter-server-documents (the same executor)",
            hint=f"set keep_outputs = false in [hosts.{profile.name}] first (README: "
            "Outputs with no browser)",
            code=ExitCode.USAGE,
        )
    rec = state.load(profile.name)
    progress = output.Progress(verbose=verbose)
    with connected(profile, ssh_config, progress) as (target, found):
        python = rec.python if rec else ""
        # the running server's environment first: that is where the user wants them
        prefix = python.rsplit("/bin/", 1)[0] if python.endswith("/bin/python") else ""
        prefix = prefix or env_prefix(profile, found)
        reach = builder_calls.reach(target, found, profile)
        if not reach["uv"]:
            with progress.phase("uv", f"copy uv {provision.UV_VERSION} to the server"):
                provision.install_uv(target, found, profile.index_url, progress)
        offline = builder_calls.go_offline(profile, reach)
        spec = provision.Spec(
            interpreter="",
            python_request=None,
            requirements=tuple(packages),
            index_url=profile.index_url,
            extra_index_urls=profile.extra_index_urls,
            kernels=(),
            modules=profile.modules,
            left_out=provision.left_out([*profile.packages, *packages]),
        )
        if offline:
            described = builder_calls.describe(target, found, prefix)
            if not described["exists"]:
                raise TetherError(
                    f"{profile.ssh}: no environment at {prefix}",
                    hint=f"`tether up {profile.name}` first",
                    code=ExitCode.NOT_FOUND,
                )
            with progress.phase("wheels", "download for the server's platform"):
                wheels = provision.download_wheels(
                    spec, found, str(described.get("python")), progress
                )
            with progress.phase("copy", "wheels the server lacks"):
                provision.push_wheels(target, wheels, reach["wheels"], progress)
        with progress.phase("install", " ".join(packages)):
            answer = builder_calls.install(
                target, found, profile, spec, env=prefix, offline=offline
            )
    for line in answer.get("uv_lines", []):
        progress.say(f"  {line}")
    if rec is not None:
        added = [p for p in rec.installed if p not in packages] + packages
        state.save(dataclasses.replace(rec, installed=tuple(added)))
    print(f"installed {' '.join(packages)} into {answer['env']}")
    if answer.get("managed"):
        print(
            "note: tether manages this environment from the profile's spec, and a rebuild "
            "(a changed spec, or `tether env --rebuild`) starts from that spec: to keep "
            f"{' '.join(packages)}, add {'it' if len(packages) == 1 else 'them'} to "
            f"`packages` in [hosts.{profile.name}] of {paths.config_file()}"
        )
    else:
        print(f"note: {answer['env']} is your own environment: nothing to edit in the profile")
    return ExitCode.OK
