"""Talking to the builder (``remote/builder.py``): one function per operation, so the
requests the workstation sends are all written here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from jupyter_tether import ssh
from jupyter_tether.clients import Builder
from jupyter_tether.config import Profile
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.probe import Probe
from jupyter_tether.provision.index import DEFAULT_INDEX
from jupyter_tether.provision.spec import Spec, spec_for
from jupyter_tether.remote import protocol

MIN_FREE_MB = 400  # JupyterLab alone is ~180 MB in a venv; leave room for the packages
INSTALL_MIN_FREE_MB = 50  # `tether install` adds a few packages to an environment


def builder_python(found: Probe) -> str:
    best = found.best_python((3, 8))
    if best is None:
        raise TetherError(
            f"{found.hostname}: no python3 (>= 3.8) on the server to run the environment builder",
            hint="install python3 there, or point `env` at an environment with Jupyter",
            code=ExitCode.PROVISION,
        )
    return best.path


def call(
    target: ssh.Target, found: Probe, request: dict[str, Any], timeout: float = 300
) -> dict[str, Any]:
    """Run one builder operation (``request["op"]``); a failure raises its TetherError."""
    fields = dict(request)
    op = fields.pop("op")
    return Builder(target, builder_python(found)).call(op, timeout, **fields)


def base_request(profile: Profile, found: Probe, spec: Spec) -> dict[str, Any]:
    """What every environment operation needs to know: the profile's python, modules,
    index and limits."""
    urls = [spec.index_url or DEFAULT_INDEX, *spec.extra_index_urls]
    return {
        "profile": profile.name,
        "python": spec.python_request,
        "python_origin": "the profile's python"
        if profile.python and "/" in profile.python
        else "python3 on the server",
        "modules": list(profile.modules),
        "module_init": found.module_init,
        "path": found.login_path,
        "env_vars": dict(profile.env_vars),
        "index_url": spec.index_url,
        "extra_index_urls": list(spec.extra_index_urls),
        "index_urls": urls,
        "build_from_source": profile.build_from_source,
        "min_free_mb": MIN_FREE_MB,
        "left_out": list(spec.left_out),
    }


def go_offline(profile: Profile, prep: Mapping[str, Any]) -> bool:
    """Install from wheels sent from here: the profile says so, or (``auto``) the
    answer of ``prepare`` or ``reach`` found the index unreachable."""
    if isinstance(profile.offline, bool):
        return profile.offline
    return not prep["index"]["reachable"]


# --- the operations ---------------------------------------------------------------------


def prepare(
    target: ssh.Target, found: Probe, request: dict[str, Any], offline: bool | str
) -> protocol.PrepareAnswer:
    """Before a build: does the environment exist, and has the server uv, a python, the
    wheels and a way to the index?"""
    return cast(
        protocol.PrepareAnswer,
        call(target, found, {**request, "op": "prepare", "offline": offline}),
    )


def find_python(target: ssh.Target, found: Probe, request: dict[str, Any]) -> protocol.PythonAnswer:
    """A python for the environment when the server has none that fits: uv fetches one."""
    return cast(
        protocol.PythonAnswer, call(target, found, {**request, "op": "python"}, timeout=3600)
    )


def build(
    target: ssh.Target,
    found: Probe,
    request: dict[str, Any],
    spec: Spec,
    *,
    python: str,
    python_version: str,
    offline: bool,
    force: bool,
    platform: Any,
) -> protocol.BuildAnswer:
    """Build the environment of ``spec`` under ``python``, import-check it, and move it
    into place."""
    return cast(
        protocol.BuildAnswer,
        call(
            target,
            found,
            {
                **request,
                "op": "build",
                "python": python,
                "python_version": python_version,
                "requirements": list(spec.requirements),
                "import_names": spec.import_names,
                "kernels": list(spec.kernels),
                "offline": offline,
                "force": force,
                "marker": {"spec": spec.digest(), "interpreter": spec.interpreter},
                "platform": platform,
            },
            timeout=3600,
        ),
    )


def reach(target: ssh.Target, found: Probe, profile: Profile) -> protocol.ReachAnswer:
    """Can the server reach the profile's index, and which uv and wheels does it have?"""
    urls = [profile.index_url or DEFAULT_INDEX, *profile.extra_index_urls]
    return cast(
        protocol.ReachAnswer,
        call(target, found, {"op": "reach", "offline": profile.offline, "index_urls": urls}),
    )


def describe(target: ssh.Target, found: Probe, env: str) -> protocol.DescribeAnswer:
    """The environment at ``env``: whether it exists, its python, packages and marker."""
    return cast(protocol.DescribeAnswer, call(target, found, {"op": "describe", "env": env}))


def install(
    target: ssh.Target, found: Probe, profile: Profile, spec: Spec, *, env: str, offline: bool
) -> protocol.InstallAnswer:
    """Add ``spec``'s requirements to the environment at ``env``."""
    request = {
        **base_request(profile, found, spec),
        "op": "install",
        "env": env,
        "requirements": list(spec.requirements),
        "import_names": spec.import_names,
        "offline": offline,
        "min_free_mb": INSTALL_MIN_FREE_MB,
    }
    return cast(protocol.InstallAnswer, call(target, found, request, timeout=3600))


def doctor(target: ssh.Target, found: Probe, profile: Profile) -> protocol.DoctorAnswer:
    """The facts `tether doctor` checks: the python (the profile's ``env`` when it has
    one), its modules, disk space, the index."""
    request = {**base_request(profile, found, spec_for(profile, found)), "op": "doctor"}
    if profile.env:
        request["python"] = profile.env.rstrip("/") + "/bin/python"
    return cast(protocol.DoctorAnswer, call(target, found, request, timeout=120))


def listen(target: ssh.Target, found: Probe) -> protocol.ListenAnswer:
    """A throwaway Unix socket on the server that greets whoever connects."""
    return cast(protocol.ListenAnswer, call(target, found, {"op": "listen"}, timeout=60))
