"""The spec of a managed environment, and its hash: what the profile asks for, decided
from the probe where it can be."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jupyter_tether.config import DEFAULT_JUPYTER, Profile
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.probe import Probe

MIN_PYTHON = (3, 9)
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# Left out of managed environments unless the profile names them. rfc3987-syntax comes
# in through jupyter-events' jsonschema[format-nongpl] and builds some 35 Earley parsers
# when imported, which Jupyter does at every start: about 0.9 s on 2 cores, for the
# "iri" format that no Jupyter schema uses (jupyter_server issue 1559). Without it,
# jsonschema skips that one format check.
LEFT_OUT = ("rfc3987-syntax",)
# keep_outputs = true: jupyter-server-documents runs cells in the server and writes
# their outputs into the notebook file, browser or not. The set is tested together
# (tests/test_outputs_e2e.py: the browser gone after line 1 of a 30 s cell, all 30
# lines on disk) and resolves with `pip check` clean. 0.3.x supports JupyterLab 4.6
# (jupyter-server-documents #264), and Lab 4.6 needs collaboration-ui/docprovider >= 3
# (its #273): pinned all together, so an upgrade is a decision, not an accident.
KEEP_OUTPUTS = (
    "jupyterlab==4.6.6",
    "jupyter_server==2.21.1",
    "jupyter-server-documents==0.3.3",
    "jupyter-collaboration-ui==3.0.4",
    "jupyter-docprovider==3.0.4",
    "jupyter-server-fileid==0.9.3",
    "jupyter-ydoc==4.2.1",
    "pycrdt==0.14.13",
)
# They provide a cell executor or a document server of their own, which
# jupyter-server-documents replaces: never in the same environment.
KEEP_OUTPUTS_CONFLICTS = ("jupyter-server-nbmodel", "jupyter-collaboration", "jupyter-server-ydoc")


@dataclass(frozen=True)
class Spec:
    """What an environment is made of. Equal specs hash equal, and only equal specs do."""

    interpreter: str  # "PATH VERSION", "module:...", "path:...", "uv:3.12"
    python_request: str | None  # what the builder is told to use (a path or a request)
    requirements: tuple[str, ...]
    index_url: str | None
    extra_index_urls: tuple[str, ...]
    kernels: tuple[str, ...]
    modules: tuple[str, ...]
    left_out: tuple[str, ...] = ()  # distributions the install must not bring in

    def digest(self) -> str:
        data = {
            "interpreter": self.interpreter,
            "requirements": sorted(self.requirements),
            "index_url": self.index_url,
            "extra_index_urls": list(self.extra_index_urls),
            "kernels": list(self.kernels),
            "modules": list(self.modules),
            "left_out": list(self.left_out),
        }
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def import_names(self) -> list[str]:
        """Distributions whose top-level packages the import check imports."""
        names: list[str] = []
        for req in self.requirements:
            name = requirement_name(req)
            if name and ";" not in req and name.lower() not in {n.lower() for n in names}:
                names.append(name)
        return names


def requirement_name(req: str) -> str | None:
    """The distribution name of a requirement line (None for options, URLs and paths)."""
    text = req.strip()
    if not text or text.startswith(("-", "#", ".", "/")) or "://" in text.split(";")[0]:
        return None
    m = _REQ_NAME.match(text)
    return m.group(1) if m else None


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def left_out(requirements: Sequence[str]) -> tuple[str, ...]:
    """The LEFT_OUT distributions that none of ``requirements`` names."""
    named = {normalized(n) for n in map(requirement_name, requirements) if n}
    return tuple(d for d in LEFT_OUT if normalized(d) not in named)


def read_requirements(path: str) -> list[str]:
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise TetherError(
            f"cannot read the profile's requirements file {file}: {exc.strerror}",
            hint="`requirements` is a path on this workstation",
            code=ExitCode.CONFIG,
        ) from exc
    lines = [line.split(" #")[0].strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _version_matches(version: tuple[int, ...], request: str | None) -> bool:
    want = tuple(int(x) for x in (request or "").split(".") if x.isdigit())
    return version[: len(want)] == want and version[:2] >= MIN_PYTHON


def choose_interpreter(profile: Profile, found: Probe) -> tuple[str, str | None]:
    """(identity for the hash, what the builder is told): chain steps 1 and 2 decided
    from the probe where possible; modules and uv-managed builds are left to the server."""
    request = profile.python
    if request and "/" in request and not request.startswith("module:"):
        return f"path:{request}", request
    if request and request.startswith("module:"):
        return f"{request}|modules:{','.join(profile.modules)}", request
    if profile.modules:
        return f"modules:{','.join(profile.modules)}|want:{request or ''}", request
    ok = [p for p in found.pythons if _version_matches(p.version, request)]
    if ok:
        best = max(ok, key=lambda p: p.version)
        return f"{best.path} {best.version_str}", best.path
    return f"uv:{request or '3.12'}", request


def jupyter_requirements(profile: Profile) -> list[str]:
    """The Jupyter part of the spec: the profile's ``jupyter``, and with keep_outputs
    the tested set (which replaces the default ``jupyter``, whose pins it includes)."""
    if not profile.keep_outputs:
        return list(profile.jupyter)
    own = [] if profile.jupyter == DEFAULT_JUPYTER else list(profile.jupyter)
    return [*own, *KEEP_OUTPUTS]


def keep_outputs_conflicts(requirements: Sequence[str]) -> list[str]:
    """The KEEP_OUTPUTS_CONFLICTS that ``requirements`` name."""
    bad = {normalized(d) for d in KEEP_OUTPUTS_CONFLICTS}
    return [n for n in map(requirement_name, requirements) if n and normalized(n) in bad]


def spec_for(profile: Profile, found: Probe) -> Spec:
    interpreter, python_request = choose_interpreter(profile, found)
    reqs = [*jupyter_requirements(profile), "ipykernel", *profile.packages]
    if profile.requirements:
        reqs += read_requirements(profile.requirements)
    clash = keep_outputs_conflicts(reqs) if profile.keep_outputs else []
    if clash:
        raise TetherError(
            f"profile {profile.name}: keep_outputs = true cannot go with {', '.join(clash)}",
            hint="jupyter-server-documents brings its own cell executor and document "
            "server; take those packages out of the profile, or set keep_outputs = false",
            code=ExitCode.CONFIG,
        )
    return Spec(
        interpreter=interpreter,
        python_request=python_request,
        requirements=tuple(dict.fromkeys(reqs)),
        index_url=profile.index_url,
        extra_index_urls=profile.extra_index_urls,
        kernels=profile.kernels,
        modules=profile.modules,
        left_out=left_out(reqs),
    )


def env_name(profile: Profile, spec: Spec) -> str:
    return f"{profile.name}-{spec.digest()}"


def data_dir(found: Probe) -> str:
    return found.tether_data or f"{found.home}/.local/share/jupyter-tether"
