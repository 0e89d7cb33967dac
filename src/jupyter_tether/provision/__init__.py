"""Managed environments on the server: Python + JupyterLab + the profile's packages.

The workstation decides and fetches; the server builds (``remote/builder.py``). Here is
the order of things (``ensure``); each step has a module of its own:

1. the *spec* (interpreter, requirements, index, kernels, modules) is hashed
   (``spec.py``); a complete environment ``envs/<profile>-<hash>`` reported by the
   probe means no work at all;
2. uv goes to the server from here: the wheel for the server's platform is fetched from
   the package index (``index.py``; the static musllinux build where there is one, else
   the manylinux build the server's glibc supports: ``tags.py``), cached, copied over
   the ssh master and unpacked there (``copy.py``); offline, while step 3's wheels
   download;
3. a server that reaches the index installs from it; one that doesn't gets the wheels
   for its exact platform downloaded here (``pip download``), only those it lacks copied
   (``wheels.py``), and installs with ``--offline --no-index --find-links``;
4. the builder builds in a temporary directory, import-checks, and renames into place;
   every request it gets is written in ``builder_calls.py``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
from collections.abc import Callable, Iterator

from jupyter_tether import output, ssh
from jupyter_tether.config import Profile
from jupyter_tether.probe import Probe
from jupyter_tether.provision import builder_calls
from jupyter_tether.provision.copy import install_uv
from jupyter_tether.provision.index import UV_VERSION
from jupyter_tether.provision.spec import (
    LEFT_OUT,
    Spec,
    choose_interpreter,
    data_dir,
    env_name,
    keep_outputs_conflicts,
    left_out,
    requirement_name,
    spec_for,
)
from jupyter_tether.provision.tags import choose_uv_wheel, manylinux_platforms
from jupyter_tether.provision.wheels import download_wheels, push_wheels

# What the commands and tests use; the rest lives in the modules named above.
__all__ = [
    "LEFT_OUT",
    "UV_VERSION",
    "Spec",
    "apply",
    "choose_interpreter",
    "choose_uv_wheel",
    "data_dir",
    "download_wheels",
    "ensure",
    "env_name",
    "install_uv",
    "keep_outputs_conflicts",
    "left_out",
    "manylinux_platforms",
    "push_wheels",
    "requirement_name",
    "spec_for",
]


def apply(
    target: ssh.Target, profile: Profile, found: Probe, *, progress: output.Progress
) -> Profile:
    """``profile`` with ``env`` pointing at its managed environment.

    A profile that brings its own ``env`` is used as it is; one that asks for nothing in
    particular uses the Jupyter on the login PATH when there is one. Otherwise (it asks
    for python/packages/requirements/jupyter/kernels, or the server has no Jupyter at
    all) tether builds the environment: `tether up HOST` works on a bare account.
    """
    if profile.env or (not profile.provision and found.jupyter):
        return profile
    return dataclasses.replace(profile, env=ensure(target, profile, found, progress=progress))


def ensure(
    target: ssh.Target,
    profile: Profile,
    found: Probe,
    *,
    progress: output.Progress,
    force: bool = False,
) -> str:
    """The prefix of the profile's managed environment on the server, built if needed.

    An unchanged spec costs nothing beyond the probe that already ran.
    """
    spec = spec_for(profile, found)
    name = env_name(profile, spec)
    if name in found.tether_envs and not force:
        progress.say(f"• env      {name} (unchanged)")
        env = f"{data_dir(found)}/envs/{name}"
        # Unchanged here, yet maybe not what the running server was started from (the
        # spec went back to one built before, such as keep_outputs switched back on).
        _say_if_running_elsewhere(profile, found, env, progress)
        return env
    with progress.phase("env", f"{name}: checking the server"):
        request = {**builder_calls.base_request(profile, found, spec), "env_name": name}
        prep = builder_calls.prepare(target, found, request, profile.offline)
    if prep["exists"] and not force:
        return str(prep["env"])
    python = prep.get("python")
    facts = prep.get("python_facts") or {}
    offline = builder_calls.go_offline(profile, prep)
    # Offline with a python at hand, the uv copy runs while the wheels download here
    # (the two do not depend on each other); otherwise uv comes first, as finding a
    # python may need it.
    uv_later = not prep["uv"] and offline and python is not None
    if not prep["uv"] and not uv_later:
        with progress.phase("uv", f"copy uv {UV_VERSION} to the server"):
            install_uv(target, found, spec.index_url, progress)
    if python is None:
        with progress.phase("python", "no suitable python3 on the server: trying uv"):
            answer = builder_calls.find_python(target, found, request)
        python, facts = answer["python"], answer["python_facts"]
    version = ".".join(map(str, python["version"]))
    progress.say(f"  python {version} at {python['path']} ({python['how']})")
    if offline:
        why = "set in the profile" if profile.offline is True else prep["index"]["detail"]
        progress.say(f"  the server cannot reach the package index ({why}): sending wheels")
        with _alongside(
            _copy_uv(target, found, spec, progress, detail="while the wheels download")
            if uv_later
            else None
        ):
            with progress.phase("wheels", "download for the server's platform"):
                wheels = download_wheels(spec, found, version, progress)
            with progress.phase("copy", "wheels the server lacks"):
                push_wheels(target, wheels, prep.get("wheels") or [], progress)
    with (
        progress.phase("build", f"{len(spec.requirements)} requirements, python {version}"),
        progress.meter("installing on the server"),
    ):
        built = builder_calls.build(
            target,
            found,
            request,
            spec,
            python=python["path"],
            python_version=version,
            offline=offline,
            force=force,
            platform=facts.get("platform"),
        )
    for step, seconds in (built.get("timings") or {}).items():
        progress.timings[f"build.{step}"] = float(seconds)
    for line in built.get("uv_lines", []):
        progress.say(f"  {line}")
    if built.get("cleaned"):
        progress.say(f"  removed interrupted builds: {', '.join(built['cleaned'])}")
    if built.get("removed"):
        progress.say(f"  removed old environments: {', '.join(built['removed'])}")
    _say_if_running_elsewhere(profile, found, str(built["env"]), progress)
    return str(built["env"])


def _copy_uv(
    target: ssh.Target, found: Probe, spec: Spec, progress: output.Progress, *, detail: str
) -> Callable[[], None]:
    def run() -> None:
        with progress.phase("uv", f"copy uv {UV_VERSION} to the server, {detail}"):
            install_uv(target, found, spec.index_url, progress)

    return run


@contextlib.contextmanager
def _alongside(step: Callable[[], None] | None) -> Iterator[None]:
    """Run ``step`` in a thread while the body runs; leave only when both are done.

    The body's own error wins; without one, the step's error is raised here, so the
    build never starts without what the step provides. The step ends on its own (its
    copy has the transfer timeout of ``copy._send``), and a step that did not finish
    leaves nothing behind on the server (``push_uv.sh`` renames a complete uv into place).
    """
    if step is None:
        yield
        return
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tether-uv") as pool:
        done = pool.submit(step)
        try:
            yield
        except BaseException:
            concurrent.futures.wait([done])
            raise
        done.result()


def _say_if_running_elsewhere(
    profile: Profile, found: Probe, env: str, progress: output.Progress
) -> None:
    """A running server of the profile keeps the environment it started from: say so
    when that is not ``env``."""
    for server in found.servers:
        jupyter = str(server.get("jupyter") or "")
        if server.get("name") == profile.name and not jupyter.startswith(env + "/"):
            progress.say(
                f"  note: a running server of {profile.name} keeps its old environment; "
                f"`tether down {profile.name}` and `up` again to switch"
            )
