"""Local packages on the server: ``develop`` folders synced and installed editable into
the environment Jupyter runs from, and ``autoreload`` in its kernels (README: Local
packages on the server).

Each folder is an ordinary sync pair (``sync.sync_pair``) with the remote end
``root_dir/.tether-develop/NAME``, so it is decided by content, both ways, with the same
backups as any synced folder. The builder then runs ``uv pip install -e`` on the synced
copies (``remote/envs.py``: ``op_develop``). An editable install points at the folder, so
a later ``tether sync`` is all a changed .py file needs.

On a server with no way to the package index the install needs the packages' build
backends and dependencies as wheels: they are read from each pyproject.toml here,
downloaded for the server's platform and copied over like the environment's own wheels;
a package whose dependencies are computed by its build (``dynamic``) or that has only a
setup.py cannot be read that way and is refused on such a server.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

from jupyter_tether import output, provision, ssh
from jupyter_tether.clients import Agent, Builder
from jupyter_tether.config import Profile, develop_pairs
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.probe import Probe
from jupyter_tether.provision import builder_calls
from jupyter_tether.remote import protocol
from jupyter_tether.sync import Outcome, sync_pair

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

MAX_FETCHES = 5  # offline: more wheels fetched for what an editable build asks for
# PEP 518: a pyproject.toml without [build-system] builds with setuptools.
DEFAULT_BUILD_REQUIRES = ("setuptools>=40.8.0",)


def wanted(profile: Profile) -> bool:
    """Whether ``up`` has anything to do here: folders to install, or autoreload said."""
    return bool(profile.develop) or profile.autoreload is not None


def sync_all(agent: Agent, profile: Profile) -> list[tuple[str, str, Outcome]]:
    """Sync every develop folder once, both ways: ``(local, remote, outcome)``."""
    out = []
    for pair in develop_pairs(profile):
        if not Path(pair.local).expanduser().is_dir():
            raise TetherError(
                f"develop: {pair.local} is not a folder here",
                hint=f"fix `develop` in [hosts.{profile.name}]",
                code=ExitCode.CONFIG,
            )
        outcome = sync_pair(agent, profile.name, pair, profile.root_dir)
        out.append((pair.local, pair.remote, outcome))
    return out


def offline_requirements(folder: Path) -> list[str]:
    """What installing ``folder`` editable needs from an index: its build requirements
    and its dependencies, from its pyproject.toml."""
    pyproject = folder / "pyproject.toml"
    try:
        data: dict[str, Any] = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TetherError(
            f"develop: cannot read {pyproject} ({exc}): the server has no way to the "
            "package index, so its build requirements must be known here",
            hint="give the package a pyproject.toml with [build-system] and [project]",
            code=ExitCode.CONFIG,
        ) from exc
    build = data.get("build-system", {}).get("requires", list(DEFAULT_BUILD_REQUIRES))
    project = data.get("project", {})
    if "dependencies" in project.get("dynamic", []):
        raise TetherError(
            f"develop: {pyproject} computes its dependencies in the build (dynamic), so "
            "they cannot be fetched here for a server with no way to the package index",
            hint="list them in [project] dependencies, or add them to `packages`",
            code=ExitCode.CONFIG,
        )
    return [*build, *project.get("dependencies", [])]


def install(
    target: ssh.Target,
    profile: Profile,
    found: Probe,
    *,
    progress: output.Progress,
) -> protocol.DevelopAnswer:
    """The synced folders installed editable into ``profile.env``; autoreload set."""
    assert profile.env
    pairs = develop_pairs(profile)
    request: dict[str, Any] = {
        **builder_calls.base_request(profile, found, provision.spec_for(profile, found)),
        "op": "develop",
        "env": profile.env,
        "root_dir": profile.root_dir,
        "folders": [p.remote for p in pairs],
        "autoreload": bool(profile.autoreload),
        "min_free_mb": builder_calls.INSTALL_MIN_FREE_MB,
        "offline": False,
    }
    offline = False
    have: list[str] = []
    if pairs:
        reach = builder_calls.reach(target, found, profile)
        if not reach["uv"]:
            with progress.phase("uv", f"copy uv {provision.UV_VERSION} to the server"):
                provision.install_uv(target, found, profile.index_url, progress)
        offline = builder_calls.go_offline(profile, reach)
        have = list(reach["wheels"])
    request["offline"] = offline
    requirements: list[str] = []
    if offline:
        for folder in profile.develop:
            requirements += offline_requirements(Path(folder).expanduser())
    builder = Builder(target, builder_calls.builder_python(found))
    fields = {k: v for k, v in request.items() if k != "op"}
    what = " ".join(Path(p.local).name for p in pairs) or "autoreload only"
    for _ in range(MAX_FETCHES + 1):
        if offline:
            _send_wheels(target, profile, found, requirements, have, progress)
        with progress.phase("develop", what):
            answer = builder.raw("develop", 3600, **fields)
        if answer.get("ok"):
            return cast(protocol.DevelopAnswer, answer)
        missing = answer.get("missing")
        if not (offline and answer.get("kind") == "no_wheel" and missing):
            break
        if missing in requirements:
            break  # sent, and still not enough: the error says which
        # PEP 660: an editable build may ask for more than [build-system] requires
        # (hatchling asks for `editables`), which only the build tells.
        progress.say(f"  the editable build of develop also needs {missing}: sending it")
        requirements.append(str(missing))
    raise builder.error(answer)


def _send_wheels(
    target: ssh.Target,
    profile: Profile,
    found: Probe,
    requirements: list[str],
    have: list[str],
    progress: output.Progress,
) -> None:
    described = builder_calls.describe(target, found, str(profile.env))
    spec = provision.Spec(
        interpreter="",
        python_request=None,
        requirements=tuple(dict.fromkeys(requirements)),
        index_url=profile.index_url,
        extra_index_urls=profile.extra_index_urls,
        kernels=(),
        modules=profile.modules,
    )
    with progress.phase("wheels", "build requirements and dependencies of develop"):
        wheels = provision.download_wheels(spec, found, str(described.get("python")), progress)
    with progress.phase("copy", "wheels the server lacks"):
        provision.push_wheels(target, wheels, have, progress)


def say(outcomes: list[tuple[str, str, Outcome]], progress: output.Progress) -> None:
    """What the develop syncs did, in ``up``'s progress (conflicts keep both versions)."""
    for local, _remote, o in outcomes:
        if o.pushed or o.pulled:
            progress.say(f"  develop {local}: pushed {len(o.pushed)}, pulled {len(o.pulled)}")
        for path, beside in o.conflicts:
            progress.note(
                f"  develop {local}: conflict: {path} changed on both sides; the server "
                f"keeps its version (beside yours as {beside}) until you resolve it"
            )
        for path, why in o.refused.items():
            progress.note(f"  develop {local}: not synced: {path}: {why}")
