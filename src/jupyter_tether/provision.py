"""Managed environments on the server: Python + JupyterLab + the profile's packages.

The workstation decides and fetches; the server builds (``remote/builder.py``):

1. the *spec* (interpreter, requirements, index, kernels, modules) is hashed; a complete
   environment ``envs/<profile>-<hash>`` reported by the probe means no work at all;
2. uv goes to the server from here: the wheel for the server's platform is fetched from
   the package index (the static musllinux build where there is one, else the manylinux
   build the server's glibc supports), unpacked, cached, and copied over the ssh master;
3. a server that reaches the index installs from it; one that doesn't gets the wheels
   for its exact platform downloaded here (``pip download``), only those it lacks copied,
   and installs with ``--offline --no-index --find-links``;
4. the builder builds in a temporary directory, import-checks, and renames into place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_tether import output, paths, proc, ssh
from jupyter_tether.clients import Builder
from jupyter_tether.config import Profile
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.probe import Probe

UV_VERSION = "0.13.9"
DEFAULT_INDEX = "https://pypi.org/simple"
MIN_FREE_MB = 400  # JupyterLab alone is ~180 MB in a venv; leave room for the packages
MIN_PYTHON = (3, 9)
MAX_SDIST_BUILDS = 10  # offline: pure-Python sdists built into wheels here, per download
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# Left out of managed environments unless the profile names them. rfc3987-syntax comes
# in through jupyter-events' jsonschema[format-nongpl] and builds some 35 Earley parsers
# when imported, which Jupyter does at every start: about 0.9 s on 2 cores, for the
# "iri" format that no Jupyter schema uses (jupyter_server issue 1559). Without it,
# jsonschema skips that one format check.
LEFT_OUT = ("rfc3987-syntax",)


# --- the spec and its hash --------------------------------------------------------------


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


def spec_for(profile: Profile, found: Probe) -> Spec:
    interpreter, python_request = choose_interpreter(profile, found)
    reqs = [*profile.jupyter, "ipykernel", *profile.packages]
    if profile.requirements:
        reqs += read_requirements(profile.requirements)
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


# --- choosing a uv wheel ----------------------------------------------------------------


def _glibc_of_tag(tag: str) -> tuple[int, int] | None:
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    for prefix, version in legacy.items():
        if tag.startswith(prefix + "_"):
            return version
    m = re.match(r"^manylinux_(\d+)_(\d+)_", tag)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _tag_arch(tag: str) -> str:
    m = re.match(r"^(?:many|musl)linux(?:1|2010|2014|_\d+_\d+)_(.+)$", tag)
    return m.group(1) if m else tag.removeprefix("linux_")


def arch_tag(machine: str) -> str:
    """``uname -m`` as wheel tags spell it."""
    return {"i386": "i686", "i586": "i686", "amd64": "x86_64", "arm64": "aarch64"}.get(
        machine, machine
    )


def choose_uv_wheel(filenames: Sequence[str], machine: str, glibc: str | None) -> str | None:
    """The uv wheel that runs on a Linux ``machine`` with ``glibc`` (None: musl or unknown).

    A musllinux wheel holds a static binary that runs on any Linux: it wins. Otherwise
    the manylinux wheel with the newest glibc the server has (shared notes: provisioning).
    """
    arch = arch_tag(machine)
    have = tuple(int(x) for x in glibc.split(".")[:2]) if glibc else None
    static: list[str] = []
    dynamic: list[tuple[tuple[int, int], str]] = []
    for name in filenames:
        if not name.endswith(".whl"):
            continue
        tags = name[:-4].split("-")[-1].split(".")
        tags = [t for t in tags if _tag_arch(t) == arch]
        if any(t.startswith("musllinux_") for t in tags):
            static.append(name)
            continue
        needs = [g for g in (_glibc_of_tag(t) for t in tags) if g is not None]
        if needs and have is not None and min(needs) <= have:
            dynamic.append((min(needs), name))
    if static:
        return sorted(static)[0]
    if dynamic:
        return max(dynamic)[1]
    return None


def manylinux_platforms(machine: str, glibc: str | None) -> list[str]:
    """Every platform tag a server with this glibc accepts, newest first (pip download
    needs them all, or it settles for older pins: shared notes, provisioning)."""
    arch = arch_tag(machine)
    if not glibc:
        return [f"musllinux_1_2_{arch}", f"musllinux_1_1_{arch}"]
    major, minor = (int(x) for x in glibc.split(".")[:2])
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    for m, name in legacy.items():
        if m <= minor:
            tags.append(f"{name}_{arch}")
    return tags


# --- the package index ------------------------------------------------------------------


def _http_get(
    url: str, accept: str | None = None, timeout: float = 60, meter: output.Meter | None = None
) -> tuple[bytes, str]:
    if not url.startswith(("https://", "http://", "file://")):
        raise TetherError(f"{url}: not an http(s) or file URL", code=ExitCode.CONFIG)
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, headers={"Accept": accept} if accept else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            if meter is None:
                data: bytes = resp.read()
            else:
                meter.total = int(resp.headers.get("Content-Length") or 0) or None
                chunks = []
                while chunk := resp.read(1 << 18):
                    chunks.append(chunk)
                    meter.add(len(chunk))
                data = b"".join(chunks)
            return data, str(resp.headers.get("Content-Type", ""))
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise TetherError(
            f"cannot fetch {url}: {getattr(exc, 'reason', exc)}",
            hint="this workstation needs to reach the package index (index_url in the profile)",
            code=ExitCode.PROVISION,
        ) from exc


def index_files(index_url: str, project: str) -> dict[str, tuple[str, str | None]]:
    """filename -> (url, sha256) from a PEP 503/691 simple index."""
    page = index_url.rstrip("/") + f"/{project}/"
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    body, ctype = _http_get(page, accept)
    files: dict[str, tuple[str, str | None]] = {}
    if "json" in ctype:
        for f in json.loads(body).get("files", []):
            files[f["filename"]] = (
                urllib.parse.urljoin(page, f["url"]),
                f.get("hashes", {}).get("sha256"),
            )
        return files
    for href, name in re.findall(r'<a[^>]+href="([^"]+)"[^>]*>\s*([^<]+?)\s*</a>', body.decode()):
        url, _, frag = urllib.parse.urljoin(page, href).partition("#")
        files[name] = (url, frag.removeprefix("sha256=") if frag.startswith("sha256=") else None)
    return files


def uv_wheel(found: Probe, index_url: str | None, progress: output.Progress) -> Path:
    """The uv wheel for the server's platform, from the local cache or the index."""
    cache = paths.cache_dir() / "uv" / UV_VERSION
    for cached in sorted(cache.glob("*.whl")) if cache.is_dir() else []:
        if choose_uv_wheel([cached.name], found.arch, found.glibc):
            return cached
    listing = index_files(index_url or DEFAULT_INDEX, "uv")
    files = {k: v for k, v in listing.items() if k.startswith(f"uv-{UV_VERSION}-")}
    wheel = choose_uv_wheel(list(files), found.arch, found.glibc)
    if wheel is None:
        raise TetherError(
            f"no uv {UV_VERSION} build for {found.arch} with glibc {found.glibc or 'none'}",
            hint="set `env` to an existing environment with Jupyter instead",
            code=ExitCode.PROVISION,
        )
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / wheel
    url, sha = files[wheel]
    start = time.monotonic()
    with progress.meter(f"fetching {wheel}") as meter:
        data, _ = _http_get(url, timeout=300, meter=meter)
    if sha and hashlib.sha256(data).hexdigest() != sha:
        raise TetherError(f"{wheel}: checksum mismatch", code=ExitCode.PROVISION)
    _say_rate(progress, f"fetched {wheel}", len(data), time.monotonic() - start)
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def _say_rate(progress: output.Progress, what: str, size: int, seconds: float) -> None:
    mb = size / 1e6
    progress.say(f"  {what}: {mb:.1f} MB in {seconds:.1f} s ({mb / max(seconds, 1e-3):.1f} MB/s)")


# --- copying to the server --------------------------------------------------------------

# Unpacks a tar from stdin into a fresh directory beside the destination, then moves the
# files in: a half-copied file never sits where the builder would use it. Written for
# sh, and free of single quotes and "!" so that any login shell passes it through.
_PUSH = (
    'd="${XDG_DATA_HOME:-$HOME/.local/share}/jupyter-tether/%s"; umask 077; '
    't="$d/.in.$$"; mkdir -p "$t" || exit 1; '
    'if tar -x%sf - -C "$t"; then for f in "$t"/*; do [ -e "$f" ] && mv -f "$f" "$d/"; done; '
    'rmdir "$t"; else rc=$?; rm -rf "$t"; exit $rc; fi'
)


# The same for the uv wheel: stdin to a file, the binary out of it with the server's
# python3 (argv: wheel, destination, member), then into bin/. %s: python3, _UNZIP_UV
# and the member.
_PUSH_UV = (
    'd="${XDG_DATA_HOME:-$HOME/.local/share}/jupyter-tether/bin"; umask 077; '
    't="$d/.in.$$"; mkdir -p "$t" || exit 1; '
    'if cat > "$t/uv.whl" && %s -c "%s" "$t/uv.whl" "$t/uv" "%s"; '
    'then chmod 700 "$t/uv" && mv -f "$t/uv" "$d/uv"; rc=$?; else rc=$?; fi; '
    'rm -rf "$t"; exit $rc'
)
_UNZIP_UV = (
    "import pathlib, sys, zipfile; a = sys.argv; "
    "pathlib.Path(a[2]).write_bytes(zipfile.ZipFile(a[1]).read(a[3]))"
)


def push(
    target: ssh.Target, archive: Path, subdir: str, *, gz: bool, meter: output.Meter | None = None
) -> proc.Result:
    """Copy ``archive`` (a tar) over the ssh master and unpack it into DATA/``subdir``."""
    return _send(target, archive, _PUSH % (subdir, "z" if gz else ""), subdir, meter)


def _send(
    target: ssh.Target, file: Path, script: str, subdir: str, meter: output.Meter | None
) -> proc.Result:
    """Feed ``file`` to ``script`` (sh, on the server, over the master), which puts it
    into DATA/``subdir``; a failure is an ssh error or a copy error naming the disk."""
    argv = [*target.command_argv(), "sh -c " + shlex.quote(script)]
    fed = meter.add if meter is not None else None
    res = proc.run(argv, stdin_file=file, timeout=1800, fed=fed)
    if res.returncode == 255 and "tar" not in res.stderr:
        raise ssh.ssh_error(target, res.stderr, res.returncode)
    if not res.ok:
        full = "no space left" in res.stderr.lower() or "quota" in res.stderr.lower()
        raise TetherError(
            f"{target.destination}: copying to ~/.local/share/jupyter-tether/{subdir} failed"
            + (": the disk is full (or over quota)" if full else ""),
            hint="free some space on the server" if full else "rerun with --verbose",
            code=ExitCode.PROVISION,
            details=res.stderr.strip()[-1000:] or None,
        )
    return res


def install_uv(
    target: ssh.Target, found: Probe, index_url: str | None, progress: output.Progress
) -> None:
    """Copy the uv wheel as it is (deflated: 19 MB rather than a 44 MB binary) and let
    the server's python3 take the binary out, so nothing is repacked here."""
    wheel = uv_wheel(found, index_url, progress)
    member = f"uv-{UV_VERSION}.data/scripts/uv"
    script = _PUSH_UV % (shlex.quote(builder_python(found)), _UNZIP_UV, member)
    size = wheel.stat().st_size
    start = time.monotonic()
    with progress.meter(f"copying uv {UV_VERSION}", size) as meter:
        _send(target, wheel, script, "bin", meter)
    progress.bytes_copied += size
    _say_rate(progress, f"copied uv {UV_VERSION}", size, time.monotonic() - start)


# --- offline: wheels for the server's platform -------------------------------------------


def download_wheels(
    spec: Spec, found: Probe, python_version: str, progress: output.Progress
) -> Path:
    """Wheels for the server's exact platform and Python, downloaded here with pip."""
    major, minor = python_version.split(".")[:2]
    key = f"{arch_tag(found.arch)}-glibc{found.glibc or 'musl'}-cp{python_version}"
    dest = paths.cache_dir() / "wheels" / key / spec.digest()
    dest.mkdir(parents=True, exist_ok=True)
    reqfile = dest.parent / f"{spec.digest()}.txt"
    reqfile.write_text("\n".join(spec.requirements) + "\n")
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check"]
    argv += ["--only-binary=:all:", "--dest", str(dest), "--python-version", python_version]
    argv += ["--implementation", "cp", "--abi", f"cp{major}{minor}", "--abi", "abi3"]
    argv += ["--abi", "none"]
    for tag in manylinux_platforms(found.arch, found.glibc):
        argv += ["--platform", tag]
    argv += _pip_index_args(spec)
    start = time.monotonic()

    def on_disk() -> int:
        return sum(f.stat().st_size for f in dest.iterdir() if f.is_file())

    cached = on_disk()

    def downloaded() -> int:
        return on_disk() - cached

    argv += ["--find-links", str(dest)]  # with the wheels built here from sdists
    built: list[str] = []
    for _ in range(MAX_SDIST_BUILDS + 1):
        with progress.meter("downloading wheels", watch=downloaded):
            res = proc.run([*argv, "-r", str(reqfile)], timeout=1800, stdin_devnull=True)
        if res.ok:
            break
        m = re.search(r"No matching distribution found for (\S+)", res.stderr)
        what = m.group(1) if m else "a requirement"
        if m is None or len(built) == MAX_SDIST_BUILDS or what in built:
            raise _no_wheel(what, python_version, found, res.stderr)
        # No wheel for the server: a pure-Python sdist built here serves it as well.
        with progress.meter(f"building {what} from its sdist"):
            _pure_wheel_from_sdist(what, spec, dest, python_version, found)
        progress.say(f"  built {what} here from its sdist (pure Python)")
        built.append(what)
    size = sum(f.stat().st_size for f in dest.glob("*.whl"))
    count = len(list(dest.glob("*.whl")))
    _say_rate(progress, f"{count} wheels for {key}", size, time.monotonic() - start)
    return dest


def _pip_index_args(spec: Spec) -> list[str]:
    argv = ["--index-url", spec.index_url] if spec.index_url else []
    for url in spec.extra_index_urls:
        argv += ["--extra-index-url", url]
    return argv


def _no_wheel(
    what: str,
    python_version: str,
    found: Probe,
    stderr: str = "",
    *,
    why: str = ": the server cannot reach the package index, so it can only install "
    "wheels sent from here",
) -> TetherError:
    return TetherError(
        f"no wheel of {what} for the server's platform (CPython {python_version}, "
        f"{found.arch}, glibc {found.glibc or 'none'}){why}",
        hint="pick a version that publishes wheels for that platform, or let the "
        "server reach the index (offline = false)",
        code=ExitCode.PROVISION,
        details=stderr.strip()[-1500:] or None,
    )


def _pure_wheel_from_sdist(
    what: str, spec: Spec, dest: Path, python_version: str, found: Probe
) -> None:
    """Build ``what`` from its sdist here into ``dest``, if the result is pure Python (a
    ``none-any`` wheel installs on any server); else the no-wheel error."""
    with tempfile.TemporaryDirectory(prefix="tether-sdist-") as tmp:
        argv = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check"]
        argv += ["--no-deps", "--no-binary", ":all:", "--wheel-dir", tmp, *_pip_index_args(spec)]
        res = proc.run([*argv, what], timeout=1800, stdin_devnull=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if not res.ok or len(wheels) != 1:
            raise _no_wheel(what, python_version, found, res.stderr)
        (wheel,) = wheels
        if not wheel.name.endswith("-none-any.whl"):
            compiled = f", and its sdist builds compiled code ({wheel.name}), which only the"
            raise _no_wheel(what, python_version, found, why=f"{compiled} server could build")
        wheel.replace(dest / wheel.name)


def push_wheels(
    target: ssh.Target, wheels: Path, have: Sequence[str], progress: output.Progress
) -> int:
    """Copy the wheels the server lacks; returns how many were sent."""
    missing = sorted(f for f in wheels.glob("*.whl") if f.name not in set(have))
    if not missing:
        progress.say("  the server has every wheel already")
        return 0
    with tempfile.NamedTemporaryFile(dir=paths.cache_dir(), suffix=".tar") as tmp:
        with tarfile.open(tmp.name, mode="w") as tf:
            for f in missing:
                tf.add(f, arcname=f.name)
        start = time.monotonic()
        sent = Path(tmp.name).stat().st_size
        with progress.meter(f"copying {len(missing)} wheels", sent) as meter:
            push(target, Path(tmp.name), "wheels", gz=False, meter=meter)
        size = sum(f.stat().st_size for f in missing)
        progress.bytes_copied += sent
        _say_rate(progress, f"copied {len(missing)} wheels", size, time.monotonic() - start)
    return len(missing)


# --- talking to the builder -------------------------------------------------------------


def builder_python(found: Probe) -> str:
    best = found.best_python((3, 8))
    if best is None:
        raise TetherError(
            f"{found.hostname}: no python3 (>= 3.8) on the server to run the environment builder",
            hint="install python3 there, or point `env` at an environment with Jupyter",
            code=ExitCode.PROVISION,
        )
    return best.path


def call(target: ssh.Target, found: Probe, request: dict[str, Any], timeout: float = 300) -> Any:
    fields = dict(request)
    op = fields.pop("op")
    return Builder(target, builder_python(found)).call(op, timeout, **fields)


def base_request(profile: Profile, found: Probe, spec: Spec) -> dict[str, Any]:
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


def go_offline(profile: Profile, prep: dict[str, Any]) -> bool:
    if isinstance(profile.offline, bool):
        return profile.offline
    return not prep["index"]["reachable"]


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
        return f"{data_dir(found)}/envs/{name}"
    with progress.phase("env", f"{name}: checking the server"):
        request = {**base_request(profile, found, spec), "env_name": name}
        prep = call(target, found, {**request, "op": "prepare", "offline": profile.offline})
    if prep["exists"] and not force:
        return str(prep["env"])
    if not prep["uv"]:
        with progress.phase("uv", f"copy uv {UV_VERSION} to the server"):
            install_uv(target, found, spec.index_url, progress)
    python = prep.get("python")
    facts = prep.get("python_facts") or {}
    if python is None:
        with progress.phase("python", "no suitable python3 on the server: trying uv"):
            answer = call(target, found, {**request, "op": "python"}, timeout=3600)
        python, facts = answer["python"], answer["python_facts"]
    version = ".".join(map(str, python["version"]))
    progress.say(f"  python {version} at {python['path']} ({python['how']})")
    offline = go_offline(profile, prep)
    if offline:
        why = "set in the profile" if profile.offline is True else prep["index"]["detail"]
        progress.say(f"  the server cannot reach the package index ({why}): sending wheels")
        with progress.phase("wheels", "download for the server's platform"):
            wheels = download_wheels(spec, found, version, progress)
        with progress.phase("copy", "wheels the server lacks"):
            push_wheels(target, wheels, prep.get("wheels") or [], progress)
    with (
        progress.phase("build", f"{len(spec.requirements)} requirements, python {version}"),
        progress.meter("installing on the server"),
    ):
        built = call(
            target,
            found,
            {
                **request,
                "op": "build",
                "python": python["path"],
                "python_version": version,
                "requirements": list(spec.requirements),
                "import_names": spec.import_names,
                "kernels": list(spec.kernels),
                "offline": offline,
                "force": force,
                "marker": {"spec": spec.digest(), "interpreter": spec.interpreter},
                "platform": facts.get("platform"),
            },
            timeout=3600,
        )
    for step, seconds in (built.get("timings") or {}).items():
        progress.timings[f"build.{step}"] = float(seconds)
    for line in built.get("uv_lines", []):
        progress.say(f"  {line}")
    if built.get("cleaned"):
        progress.say(f"  removed interrupted builds: {', '.join(built['cleaned'])}")
    if built.get("removed"):
        progress.say(f"  removed old environments: {', '.join(built['removed'])}")
    for server in found.servers:
        jupyter = str(server.get("jupyter") or "")
        if server.get("name") == profile.name and not jupyter.startswith(built["env"] + "/"):
            progress.say(
                f"  note: a running server of {profile.name} keeps its old environment; "
                f"`tether down {profile.name}` and `up` again to switch"
            )
    return str(built["env"])
