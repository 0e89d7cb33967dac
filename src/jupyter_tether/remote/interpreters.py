"""The builder's choice of interpreter: the profile's, a python3 on the server, a
uv-managed CPython, or (only when allowed) one built from source."""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import List, Optional, Tuple

from . import core
from .core import Json, place
from .runner import base_env, run, tail, with_modules

MIN_PYTHON = (3, 9)

# Headers a CPython source build needs for the modules users notice missing first.
SOURCE_HEADERS = (
    ("openssl", "openssl/ssl.h"),
    ("zlib", "zlib.h"),
    ("libffi", "ffi.h"),
    ("sqlite3", "sqlite3.h"),
    ("bzip2", "bzlib.h"),
    ("xz", "lzma.h"),
)


def python_version(python: str, req: Json) -> Optional[Tuple[int, ...]]:
    code = 'import sys; print("%d.%d.%d" % sys.version_info[:3])'
    rc, out = run(with_modules([python, "-c", code], req), base_env(req), 30)
    line = out.strip().splitlines()[-1] if out.strip() else ""
    if rc != 0 or not re.match(r"^\d+\.\d+\.\d+$", line):
        return None
    return tuple(int(x) for x in line.split("."))


def wanted_prefix(request: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in request.split(".") if x.isdigit())


def matches(version: Tuple[int, ...], request: str) -> bool:
    """``version`` starts with the requested one (``"3.11"``) and is new enough."""
    want = wanted_prefix(request)
    return version[: len(want)] == want and version[:2] >= MIN_PYTHON


def vstr(v: Tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def _explicit(choice: str, req: Json, tried: List[str]) -> Optional[Json]:
    path = os.path.expanduser(choice)
    v = python_version(path, req) if os.access(path, os.X_OK) else None
    if v is None:
        tried.append("%s: does not exist or does not run" % choice)
        return None
    if v[:2] < MIN_PYTHON:
        tried.append("%s: Python %s is older than 3.9" % (choice, vstr(v)))
        return None
    return {"path": path, "version": list(v), "how": req.get("python_origin") or "profile"}


def find_python(req: Json, tried: List[str]) -> Optional[Json]:
    """Chain steps 1 and 2: the profile's explicit choice, else a python3 on the server."""
    choice = req.get("python") or ""
    env = base_env(req)
    if choice and not choice.startswith("module:") and "/" in choice:
        return _explicit(choice, req, tried)
    request = "" if choice.startswith("module:") else choice
    if choice.startswith("module:") or req.get("modules"):
        found = module_python(req)
        if found is None:
            tried.append(
                "modules %s: no python3 on PATH after `module load`" % " ".join(req["modules"])
            )
        else:
            v = python_version(found, req)
            if v is not None and matches(v, request):
                return {"path": found, "version": list(v), "how": "module"}
            tried.append("%s (from modules): Python %s" % (found, vstr(v) if v else "broken"))
        if choice.startswith("module:"):
            return None
    seen = set()
    best = None
    for name in ["python3"] + ["python3.%d" % minor for minor in range(14, 8, -1)]:
        path = shutil.which(name, path=env["PATH"]) or ""
        if not path or os.path.realpath(path) in seen:
            continue
        seen.add(os.path.realpath(path))
        v = python_version(path, req)
        if v is None:
            continue
        if not matches(v, request):
            tried.append("%s: Python %s does not match %s" % (path, vstr(v), request or ">= 3.9"))
            continue
        if best is None or v > tuple(best["version"]):
            best = {"path": path, "version": list(v), "how": "python3 on the server"}
    if best is None and not seen:
        tried.append("no python3 on the login PATH")
    return best


def module_python(req: Json) -> Optional[str]:
    argv = with_modules(["sh", "-c", "command -v python3"], req)
    rc, out = run(argv, base_env(req), 60)
    lines = [ln for ln in out.splitlines() if ln.startswith("/")]
    return lines[-1] if rc == 0 and lines else None


def uv_python(req: Json, tried: List[str]) -> Optional[Json]:
    """Chain step 3: a uv-managed CPython (needs the builds, or a mirror, to be reachable)."""
    uv = place("bin", "uv")
    request = req.get("python") or "3.12"
    if request.startswith("module:") or "/" in request:
        return None
    if not os.access(uv, os.X_OK):
        tried.append("uv python install %s: uv is not on the server yet" % request)
        return None
    env = base_env(req)
    env["UV_PYTHON_DOWNLOADS"] = "manual"
    rc, out = run([uv, "python", "install", request], env, 600)
    if rc != 0:
        tried.append("uv python install %s: %s" % (request, tail(out, 1) or "failed"))
        return None
    rc, out = run([uv, "python", "find", "--no-project", request], env, 60)
    path = out.strip().splitlines()[-1] if rc == 0 and out.strip() else ""
    v = python_version(path, req) if path else None
    if v is None:
        tried.append("uv python install %s: installed, but uv cannot find it" % request)
        return None
    return {"path": path, "version": list(v), "how": "uv python install"}


def include_dirs() -> List[str]:
    dirs = ["/usr/include", "/usr/local/include"]
    for var in ("CPATH", "C_INCLUDE_PATH"):
        dirs += [d for d in os.environ.get(var, "").split(":") if d]
    dirs += re.findall(r"-I\s*(\S+)", os.environ.get("CPPFLAGS", ""))
    multiarch = "/usr/include/%s-linux-gnu" % os.uname().machine
    return [*dirs, multiarch]


def missing_for_source(req: Json) -> List[str]:
    """What a CPython source build lacks here: compiler, make, headers."""
    env = base_env(req)
    cc = shutil.which("cc", path=env["PATH"]) or shutil.which("gcc", path=env["PATH"])
    missing = [] if cc else ["a C compiler (cc/gcc)"]
    if not shutil.which("make", path=env["PATH"]):
        missing.append("make")
    dirs = include_dirs()
    for lib, header in SOURCE_HEADERS:
        if not any(os.path.exists(os.path.join(d, header)) for d in dirs):
            missing.append("%s (%s)" % (lib, header))
    return missing


def source_python(req: Json, tried: List[str]) -> Optional[Json]:
    """Chain step 4, only with build_from_source: check the toolchain and headers first,
    so that a failure names the missing library instead of a broken ssl module later."""
    if not req.get("build_from_source"):
        return None
    missing = missing_for_source(req)
    if missing:
        tried.append("source build: missing " + ", ".join(missing))
        return None
    tarballs = sorted(f for f in os.listdir(core.mkdirs(place("src"))) if f.startswith("Python-"))
    if not tarballs:
        tried.append("source build: no Python-X.Y.Z.tgz in %s" % place("src"))
        return None
    tarball = str(tarballs[-1])
    version = tarball[len("Python-") :].split(".t", maxsplit=1)[0]
    prefix = place("python", "source-" + version)
    build = core.mkdirs(place("src", "build-%d" % os.getpid()))
    try:
        script = (
            'set -e; tar -xf "$1" -C "$2"; cd "$2"/Python-*; '
            './configure --prefix="$3" >configure.log 2>&1; make -j4 >make.log 2>&1; '
            "make install >install.log 2>&1"
        )
        argv = ["sh", "-c", script, "sh", place("src", tarball), build, prefix]
        rc, out = run(with_modules(argv, req), base_env(req), 3600)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    python = os.path.join(prefix, "bin", "python3")
    v = python_version(python, req) if rc == 0 else None
    if v is None:
        tried.append("source build of %s: %s" % (version, tail(out, 1) or "failed"))
        return None
    return {"path": python, "version": list(v), "how": "built from source"}


def resolve_python(req: Json, later_steps: bool) -> Tuple[Optional[Json], List[str]]:
    tried: List[str] = []
    found = find_python(req, tried)
    if found is None and later_steps:
        found = uv_python(req, tried) or source_python(req, tried)
    return found, tried


def python_facts(python: str, req: Json) -> Json:
    argv = with_modules([python, "-c", core.snippet("python_facts.py")], req)
    rc, out = run(argv, base_env(req), 60)
    try:
        data = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {}
    except (ValueError, IndexError):
        data = {}
    return data if isinstance(data, dict) else {}
