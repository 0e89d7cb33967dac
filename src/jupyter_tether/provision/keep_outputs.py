"""keep_outputs for an environment tether does not manage (the profile's ``env``): what it
lacks of the tested set, and the pip line that adds it. Managed environments get the set
in their spec (``spec.KEEP_OUTPUTS``); `up` warns and `doctor` checks with this."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from jupyter_tether.provision.spec import (
    KEEP_OUTPUTS,
    KEEP_OUTPUTS_CONFLICTS,
    normalized,
    requirement_name,
)

EXECUTOR = "jupyter-server-documents"  # the package that writes outputs on the server


@dataclass(frozen=True)
class EnvCheck:
    """What an environment has of the tested set."""

    missing: tuple[str, ...]  # requirements of the set not installed at all
    other_versions: tuple[str, ...]  # installed, at a version other than the tested one
    conflicts: tuple[str, ...]  # KEEP_OUTPUTS_CONFLICTS that are installed

    @property
    def works(self) -> bool:
        """Outputs are written on the server: the executor is there, and nothing else
        that executes cells."""
        return normalized(EXECUTOR) not in {_name(r) for r in self.missing} and not self.conflicts

    @property
    def tested(self) -> bool:
        return self.works and not self.missing and not self.other_versions


def _name(requirement: str) -> str:
    return normalized(requirement_name(requirement) or requirement)


def check(packages: Iterable[Sequence[str]]) -> EnvCheck:
    """Compare ``packages`` ((name, version) pairs, as `tether env` lists them) with the set."""
    have = {normalized(name): version for name, version in packages}
    missing: list[str] = []
    other: list[str] = []
    for req in KEEP_OUTPUTS:
        name, _, want = req.partition("==")
        version = have.get(normalized(name))
        if version is None:
            missing.append(req)
        elif version != want:
            other.append(f"{name} {version} (tested: {want})")
    conflicts = [d for d in KEEP_OUTPUTS_CONFLICTS if normalized(d) in have]
    return EnvCheck(tuple(missing), tuple(other), tuple(conflicts))


def pip_line(env: str) -> str:
    """The command that installs the tested set into ``env`` (run on the server)."""
    python = env.rstrip("/") + "/bin/python"
    return " ".join([python, "-m", "pip", "install", *map(shlex.quote, KEEP_OUTPUTS)])


def uninstall_line(env: str, conflicts: Sequence[str]) -> str:
    python = env.rstrip("/") + "/bin/python"
    return f"{python} -m pip uninstall -y {' '.join(conflicts)}"


def advice(env: str, found: EnvCheck) -> str:
    """One warning for `up`: what is wrong with ``env`` for keep_outputs, and the fix."""
    parts: list[str] = []
    if found.conflicts:
        parts.append(
            f"it has {', '.join(found.conflicts)}, which run cells their own way "
            f"(remove: {uninstall_line(env, found.conflicts)})"
        )
    if not found.works or found.missing or found.other_versions:
        lacks = [*found.missing, *found.other_versions]
        what = "outputs made with no browser open are lost" if not found.works else "untested"
        parts.append(f"{what}; it lacks {', '.join(lacks)} (install: {pip_line(env)})")
    return f"keep_outputs: {env} is not set up for it: " + "; ".join(parts)
