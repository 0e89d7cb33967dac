"""jupyter-tether's environment builder: the server side of provisioning.

Standard library only, Python >= 3.8 syntax: it runs under whatever python3 the server
has, before any environment exists.  Like the agent, it reads one JSON request on stdin
and prints one JSON answer on a line starting with ``@@TETHER-JSON@@``.

Layout (``$XDG_DATA_HOME`` or ``~/.local/share``)/jupyter-tether/:
    bin/uv                       uv, copied from the workstation (never downloaded here)
    cache/                       uv's cache (same filesystem as envs/: hard links)
    python/                      uv-managed CPython builds, when one was needed
    wheels/                      wheels the workstation sent for offline installs
    envs/NAME-HASH/              complete environments (.tether-env.json marks them)
    envs/.incoming/NAME-HASH.PID environments being built; renamed into place when good
    envs/.lock                   one build at a time per account
"""

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

MARK = "@@TETHER-JSON@@"
MARKER = ".tether-env.json"
MIN_PYTHON = (3, 9)
Json = Dict[str, Any]

# Imports every top-level package of the named distributions that has an importable
# name; run under the new environment's python. argv[1] is a JSON list of names.
IMPORT_CHECK = r"""
import importlib, json, re, sys
import importlib.metadata as md
out = {"checked": [], "failed": {}}
for dist in json.loads(sys.argv[1]):
    try:
        d = md.distribution(dist)
    except Exception:
        out["failed"][dist] = "not installed"
        continue
    tops = (d.read_text("top_level.txt") or "").split()
    if not tops:
        tops = sorted({f.parts[0].split(".")[0] for f in (d.files or [])
                       if f.parts and not f.parts[0].endswith((".dist-info", ".data"))
                       and f.parts[0] not in ("..", "bin")
                       and (len(f.parts) == 1 and f.suffix == ".py"
                            or len(f.parts) > 1 and f.parts[-1] == "__init__.py")})
    tops = [t for t in tops if t.isidentifier() and not t.startswith("_")]
    if not tops:
        continue
    want = re.sub(r"[-_.]+", "_", dist).lower()
    mod = want if want in tops else tops[0]
    try:
        importlib.import_module(mod)
        out["checked"].append(mod)
    except BaseException as exc:
        out["failed"][dist] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(out))
"""

LIST_PACKAGES = r"""
import json, sys
import importlib.metadata as md
pkgs = sorted({(d.metadata["Name"], d.version) for d in md.distributions() if d.metadata["Name"]},
              key=lambda p: p[0].lower())
print(json.dumps({"python": "%d.%d.%d" % sys.version_info[:3], "packages": pkgs}))
"""

PYTHON_FACTS = r"""
import json, sys, sysconfig
mods = {}
for m in ("ssl", "zlib", "ctypes", "sqlite3", "bz2", "lzma"):
    try:
        __import__(m)
        mods[m] = ""
    except BaseException as exc:
        mods[m] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps({"executable": sys.executable, "version": list(sys.version_info[:3]),
                  "modules": mods, "platform": sysconfig.get_platform()}))
"""

# Headers a CPython source build needs for the modules users notice missing first.
SOURCE_HEADERS = (
    ("openssl", "openssl/ssl.h"),
    ("zlib", "zlib.h"),
    ("libffi", "ffi.h"),
    ("sqlite3", "sqlite3.h"),
    ("bzip2", "bzlib.h"),
    ("xz", "lzma.h"),
)


class BuildError(Exception):
    def __init__(self, kind: str, message: str, hint: str = "", **extra: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.hint = hint
        self.extra = extra


# --- places ---------------------------------------------------------------------------


def data_root() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "jupyter-tether")


def place(*parts: str) -> str:
    return os.path.join(data_root(), *parts)


def mkdirs(path: str) -> str:
    os.makedirs(path, 0o700, exist_ok=True)
    return path


def read_json(path: str) -> Optional[Json]:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def free_mb(path: str) -> int:
    while not os.path.isdir(path):
        path = os.path.dirname(path) or "/"
    st = os.statvfs(path)
    return int(st.f_bavail * st.f_frsize // (1024 * 1024))


def tree_mb(path: str) -> int:
    seen = set()
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total // (1024 * 1024)


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class Lock:
    """flock on envs/.lock: builds of one account never overlap."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.fd = -1

    def __enter__(self) -> "Lock":
        mkdirs(os.path.dirname(self.path))
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() > deadline:
                raise BuildError(
                    "locked",
                    "another tether command has been building an environment here for %d s"
                    % self.timeout,
                    "wait for it to finish, then run the command again",
                )
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


# --- running things -------------------------------------------------------------------


def with_modules(argv: List[str], req: Json) -> List[str]:
    """argv, run after `module load`ing the profile's modules (only those need a shell)."""
    modules = req.get("modules") or []
    init = req.get("module_init") or ""
    if not modules:
        return argv
    script = '. "$1" >/dev/null 2>&1 || exit 97; shift; module load %s || exit 98; exec "$@"' % (
        " ".join(shlex_quote(m) for m in modules)
    )
    return ["sh", "-c", script, "sh", init or "/nonexistent", *argv]


def shlex_quote(s: str) -> str:
    if re.match(r"^[A-Za-z0-9_./:=+@%-]+$", s):
        return s
    return "'" + s.replace("'", "'\"'\"'") + "'"


def base_env(req: Json) -> Dict[str, str]:
    env = dict(os.environ)
    for key in (
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
        "PYTHONHOME",
        "PYTHONPATH",
        "PIP_REQUIRE_VIRTUALENV",
    ):
        env.pop(key, None)
    env["PATH"] = req.get("path") or env.get("PATH", "/usr/bin:/bin")
    for key, value in (req.get("env_vars") or {}).items():
        env[str(key)] = str(value)
    env.update(
        {
            "UV_CACHE_DIR": place("cache"),
            "UV_PYTHON_INSTALL_DIR": place("python"),
            "UV_NO_CONFIG": "1",  # the profile says where packages come from, not uv.toml
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_PROGRESS": "1",
            # The site's CA (proxies, private indexes) lives in the system store, which
            # uv's bundled roots ignore unless told.
            "UV_SYSTEM_CERTS": "1",
            "UV_NATIVE_TLS": "1",
            "MPLBACKEND": "Agg",
        }
    )
    return env


def run(argv: List[str], env: Dict[str, str], timeout: float) -> Tuple[int, str]:
    """Run argv, return (rc, combined output). A timeout is rc 124."""
    try:
        cp = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if exc.output else ""
        return 124, out + "\n(timed out after %d s)" % timeout
    except OSError as exc:
        return 127, "%s: %s" % (argv[0], exc.strerror)
    return cp.returncode, cp.stdout.decode(errors="replace")


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def disk_full(text: str) -> bool:
    low = text.lower()
    return (
        "no space left on device" in low
        or "disk quota exceeded" in low
        or "os error 28" in low
        or "os error 122" in low
    )


# --- interpreters ---------------------------------------------------------------------


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
    want = wanted_prefix(request)
    return version[: len(want)] == want and version[:2] >= MIN_PYTHON


def vstr(v: Tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def find_python(req: Json, tried: List[str]) -> Optional[Json]:
    """Chain steps 1 and 2: the profile's explicit choice, else a python3 on the server."""
    choice = req.get("python") or ""
    env = base_env(req)
    if choice and not choice.startswith("module:") and "/" in choice:
        path = os.path.expanduser(choice)
        v = python_version(path, req) if os.access(path, os.X_OK) else None
        if v is None:
            tried.append("%s: does not exist or does not run" % choice)
            return None
        if v[:2] < MIN_PYTHON:
            tried.append("%s: Python %s is older than 3.9" % (choice, vstr(v)))
            return None
        return {"path": path, "version": list(v), "how": req.get("python_origin") or "profile"}
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


def source_python(req: Json, tried: List[str]) -> Optional[Json]:
    """Chain step 4, only with build_from_source: check the toolchain and headers first,
    so that a failure names the missing library instead of a broken ssl module later."""
    if not req.get("build_from_source"):
        return None
    env = base_env(req)
    cc = shutil.which("cc", path=env["PATH"]) or shutil.which("gcc", path=env["PATH"])
    missing = [] if cc else ["a C compiler (cc/gcc)"]
    if not shutil.which("make", path=env["PATH"]):
        missing.append("make")
    dirs = include_dirs()
    for lib, header in SOURCE_HEADERS:
        if not any(os.path.exists(os.path.join(d, header)) for d in dirs):
            missing.append("%s (%s)" % (lib, header))
    if missing:
        tried.append("source build: missing " + ", ".join(missing))
        return None
    tarballs = sorted(f for f in os.listdir(mkdirs(place("src"))) if f.startswith("Python-"))
    if not tarballs:
        tried.append("source build: no Python-X.Y.Z.tgz in %s" % place("src"))
        return None
    tarball = str(tarballs[-1])
    version = tarball[len("Python-") :].split(".t", maxsplit=1)[0]
    prefix = place("python", "source-" + version)
    build = mkdirs(place("src", "build-%d" % os.getpid()))
    try:
        script = (
            'set -e; tar -xf "$1" -C "$2"; cd "$2"/Python-*; '
            './configure --prefix="$3" >configure.log 2>&1; make -j4 >make.log 2>&1; '
            "make install >install.log 2>&1"
        )
        rc, out = run(
            with_modules(["sh", "-c", script, "sh", place("src", tarball), build, prefix], req),
            env,
            3600,
        )
    finally:
        remove_tree(build)
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
    rc, out = run(with_modules([python, "-c", PYTHON_FACTS], req), base_env(req), 60)
    try:
        data = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {}
    except (ValueError, IndexError):
        data = {}
    return data if isinstance(data, dict) else {}


def index_reachable(urls: List[str], seconds: float = 3.0) -> Json:
    """A short, bounded check: can a TCP connection reach the index host?"""
    deadline = time.monotonic() + seconds
    for url in urls or ["https://pypi.org/simple/"]:
        m = re.match(r"^(https?)://(?:[^@/]*@)?([^/:]+)(?::(\d+))?", url)
        if not m:
            continue  # file:// and the like: nothing to reach over the network
        port = int(m.group(3) or (443 if m.group(1) == "https" else 80))
        left = deadline - time.monotonic()
        if left <= 0:
            return {"reachable": False, "detail": "no answer within %g s" % seconds}
        try:
            socket.setdefaulttimeout(left)
            with socket.create_connection((m.group(2), port), timeout=left):
                pass
        except OSError as exc:
            return {"reachable": False, "detail": "%s:%d: %s" % (m.group(2), port, exc)}
        finally:
            socket.setdefaulttimeout(None)
    return {"reachable": True, "detail": ""}


# --- environments ---------------------------------------------------------------------


def env_dir(name: str) -> str:
    return place("envs", name)


def complete_envs() -> List[Json]:
    root = place("envs")
    out = []
    for entry in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        marker = read_json(os.path.join(root, entry, MARKER))
        if marker is not None:
            marker["dir"] = os.path.join(root, entry)
            out.append(marker)
    return out


def clean_incoming() -> List[str]:
    """Remove what interrupted builds left; callers hold the lock, so none is running."""
    incoming = place("envs", ".incoming")
    removed = []
    for entry in os.listdir(incoming) if os.path.isdir(incoming) else []:
        remove_tree(os.path.join(incoming, entry))
        removed.append(entry)
    return removed


def in_use() -> List[str]:
    """Environments a live server runs from (by the agent's state files)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    root = os.path.join(state, "jupyter-tether", "servers")
    used = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        st = read_json(os.path.join(root, name, "state.json")) or {}
        pid = st.get("pid")
        alive = False
        if isinstance(pid, int):
            try:
                os.kill(pid, 0)
                alive = True
            except OSError:
                pass
        if alive and st.get("jupyter"):
            used.append(os.path.dirname(os.path.dirname(str(st["jupyter"]))))
    return used


def collect_garbage(profile: str, keep: str) -> List[str]:
    """Old environments of ``profile``: keep the new one, the last good one before it,
    and any a running server uses; remove the rest."""
    mine = [m for m in complete_envs() if m.get("profile") == profile and m["dir"] != keep]
    mine.sort(key=lambda m: float(m.get("created") or 0), reverse=True)
    used = set(in_use())
    removed = []
    for marker in mine[1:]:
        if marker["dir"] in used:
            continue
        remove_tree(marker["dir"])
        removed.append(os.path.basename(marker["dir"]))
    return removed


def uv_install_argv(req: Json, python: str, reqfile: str) -> List[str]:
    argv = [place("bin", "uv"), "pip", "install", "--python", python, "-r", reqfile]
    if req.get("offline"):
        argv += ["--offline", "--no-index", "--find-links", place("wheels")]
    else:
        if req.get("index_url"):
            argv += ["--index-url", req["index_url"]]
        for url in req.get("extra_index_urls") or []:
            argv += ["--extra-index-url", url]
    return argv


def install(req: Json, python: str, requirements: List[str], workdir: str) -> List[str]:
    reqfile = os.path.join(workdir, ".tether-requirements.txt")
    with open(reqfile, "w") as f:
        f.write("\n".join(requirements) + "\n")
    argv = uv_install_argv(req, python, reqfile)
    if req.get("left_out"):
        # uv's documented way to drop a dependency: override it with a marker that is
        # never true.
        overrides = os.path.join(workdir, ".tether-overrides.txt")
        with open(overrides, "w") as f:
            for name in req["left_out"]:
                f.write("%s ; sys_platform == 'never'\n" % name)
        argv += ["--override", overrides]
    argv = with_modules(argv, req)
    rc, out = run(argv, base_env(req), float(req.get("timeout") or 1800))
    if rc != 0:
        raise_install_error(out, req)
    return [ln for ln in out.splitlines() if re.match(r"^(Resolved|Prepared|Installed) ", ln)]


def raise_install_error(out: str, req: Json) -> None:
    if disk_full(out):
        raise BuildError(
            "disk_full",
            "the disk is full (or over quota) in %s: %d MB free now"
            % (place("envs"), free_mb(place("envs"))),
            "free some space or raise the quota; the previous environment is untouched",
            output=tail(out),
        )
    missing = re.search(r"[Bb]ecause (\S+) was not found in the (?:package registry|provided)", out)
    if req.get("offline") and missing:
        raise BuildError(
            "no_wheel",
            "no wheel of %s for the server's platform in the offline wheel set" % missing.group(1),
            "the workstation could not fetch a wheel for it; choose another version",
            output=tail(out),
        )
    if missing:
        raise BuildError(
            "no_package",
            "no package named %s on the package index (%s)"
            % (missing.group(1), ", ".join(req.get("index_urls") or []) or "uv's default"),
            "check its spelling in `packages` or `requirements` (the name pip installs, "
            "e.g. scikit-learn), or set index_url to the index that has it",
            output=tail(out),
        )
    # uv explains an unsatisfiable set in sentences from "Because" to "unsatisfiable".
    conflict = re.search(r"Because (.+?) unsatisfiable", " ".join(out.split()))
    if conflict:
        raise BuildError(
            "conflict",
            "the requirements conflict: because %s unsatisfiable" % conflict.group(1)[:600],
            "relax or drop one of these pins in `packages` or `requirements`; tether adds "
            "ipykernel and the `jupyter` requirements (by default jupyterlab and "
            "jupyter_server>=2.21)",
            output=tail(out),
        )
    raise BuildError(
        "install_failed",
        "uv pip install failed: %s" % (tail(out, 1) or "no output"),
        "the output above says why; check the package names and the index",
        output=tail(out),
    )


def import_check(python: str, names: List[str], req: Json) -> List[str]:
    argv = with_modules([python, "-c", IMPORT_CHECK, json.dumps(names)], req)
    rc, out = run(argv, base_env(req), 300)
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BuildError(
            "import_failed", "the import check did not run: %s" % tail(out, 3)
        ) from None
    if rc != 0 or result["failed"]:
        failed = ", ".join("%s (%s)" % kv for kv in sorted(result["failed"].items()))
        raise BuildError(
            "import_failed",
            "the new environment cannot import: %s" % failed,
            "a package may need a system library or a module; the old environment stays",
        )
    return list(result["checked"])


def register_kernels(prefix: str, kernels: List[str]) -> List[str]:
    """Kernelspecs for other environments, inside the new env's data dir, so that this
    Jupyter's launcher shows them. The env's own python3 kernel comes with ipykernel."""
    done = []
    for raw in kernels:
        env = os.path.expanduser(raw).rstrip("/")
        python = os.path.join(env, "bin", "python")
        if not os.access(python, os.X_OK):
            raise BuildError(
                "bad_kernel",
                "kernels: %s has no bin/python" % raw,
                "list environments that have ipykernel installed",
            )
        name = re.sub(r"[^A-Za-z0-9._-]", "-", os.path.basename(env) or "env").lower()
        spec_dir = mkdirs(os.path.join(prefix, "share", "jupyter", "kernels", "tether-" + name))
        spec = {
            "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python (%s)" % raw,
            "language": "python",
        }
        with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
            json.dump(spec, f, indent=1)
        done.append("tether-" + name)
    return done


def check_space(path: str, need_mb: int) -> int:
    have = free_mb(path)
    if have < need_mb:
        raise BuildError(
            "disk_full",
            "not enough disk space in %s: %d MB free, at least %d MB needed"
            % (path, have, need_mb),
            "free some space or raise the quota; the previous environment is untouched",
            free_mb=have,
            need_mb=need_mb,
        )
    return have


# --- operations -----------------------------------------------------------------------


def op_prepare(req: Json) -> Json:
    """Before any copying: is the env there, which python, online or not, what space,
    which wheels the server already has. Cheap; takes no lock."""
    final = env_dir(req["env_name"])
    if os.path.isfile(os.path.join(final, MARKER)):
        return {"exists": True, "env": final}
    mkdirs(place("envs", ".incoming"))
    check_space(place("envs", ".incoming"), int(req.get("min_free_mb") or 0))
    python, tried = resolve_python(req, later_steps=False)
    facts = python_facts(python["path"], req) if python else {}
    if req.get("offline") == "auto":
        reach = index_reachable(req.get("index_urls") or [])
    else:
        reach = {"reachable": not req.get("offline"), "detail": "set in the profile"}
    wheels = sorted(os.listdir(place("wheels"))) if os.path.isdir(place("wheels")) else []
    return {
        "exists": False,
        "env": final,
        "python": python,
        "python_facts": facts,
        "tried": tried,
        "index": reach,
        "wheels": wheels,
        "free_mb": free_mb(place("envs", ".incoming")),
        "uv": os.access(place("bin", "uv"), os.X_OK),
    }


def op_python(req: Json) -> Json:
    """Chain steps 3 and 4 (uv-managed CPython, source build), once uv is on the server."""
    python, tried = resolve_python(req, later_steps=True)
    if python is None:
        raise BuildError(
            "no_python",
            "no usable Python >= 3.9 on the server. Tried:\n  " + "\n  ".join(tried),
            'install python3 (>= 3.9), set python = "/path/to/python3" or '
            '"module:NAME" in the profile, give uv a mirror (env_vars '
            "UV_PYTHON_INSTALL_MIRROR), or allow build_from_source = true",
            tried=tried,
        )
    return {"python": python, "python_facts": python_facts(python["path"], req), "tried": tried}


def op_build(req: Json) -> Json:
    final = env_dir(req["env_name"])
    with Lock(place("envs", ".lock"), timeout=float(req.get("lock_timeout") or 900)):
        cleaned = clean_incoming()
        if os.path.isfile(os.path.join(final, MARKER)) and not req.get("force"):
            return {"env": final, "built": False, "cleaned": cleaned}
        incoming = mkdirs(place("envs", ".incoming"))
        check_space(incoming, int(req.get("min_free_mb") or 0))
        work = os.path.join(incoming, "%s.%d" % (req["env_name"], os.getpid()))
        python = req["python"]
        env = base_env(req)
        t0 = time.monotonic()
        try:
            # --relocatable: scripts find their interpreter relative to themselves, so the
            # environment still works after the rename out of .incoming.
            argv = [place("bin", "uv"), "venv", "--quiet", "--relocatable", "--python", python]
            rc, out = run(with_modules([*argv, work], req), env, 300)
            if rc != 0:
                if disk_full(out):
                    raise_install_error(out, req)
                raise BuildError("venv_failed", "uv venv failed: %s" % tail(out, 3))
            t1 = time.monotonic()
            lines = install(req, os.path.join(work, "bin", "python"), req["requirements"], work)
            t2 = time.monotonic()
            checked = import_check(os.path.join(work, "bin", "python"), req["import_names"], req)
            kernels = register_kernels(work, req.get("kernels") or [])
            marker = dict(req.get("marker") or {})
            marker.update(
                {
                    "profile": req["profile"],
                    "python": python,
                    "python_version": req.get("python_version"),
                    "created": time.time(),
                    "requirements": req["requirements"],
                    "left_out": req.get("left_out") or [],
                    "offline": bool(req.get("offline")),
                    "kernels": kernels,
                    "added": [],
                }
            )
            with open(os.path.join(work, MARKER), "w") as f:
                json.dump(marker, f)
            old = None
            if os.path.isdir(final):  # --rebuild: swap, then drop the old copy
                old = os.path.join(incoming, "%s.old.%d" % (req["env_name"], os.getpid()))
                os.rename(final, old)
            os.rename(work, final)
            if old:
                remove_tree(old)
        except BaseException:
            remove_tree(work)
            raise
        removed = collect_garbage(req["profile"], final)
        return {
            "env": final,
            "built": True,
            "cleaned": cleaned,
            "removed": removed,
            "checked": checked,
            "uv_lines": lines,
            "timings": {"venv": t1 - t0, "install": t2 - t1, "check": time.monotonic() - t2},
            "size_mb": tree_mb(final),
        }


def op_install(req: Json) -> Json:
    """Add packages to an existing environment (``tether install``)."""
    prefix = os.path.expanduser(req["env"])
    python = os.path.join(prefix, "bin", "python")
    if not os.access(python, os.X_OK):
        raise BuildError("no_env", "%s is not an environment (no bin/python)" % req["env"])
    with Lock(place("envs", ".lock"), timeout=float(req.get("lock_timeout") or 900)):
        check_space(prefix, int(req.get("min_free_mb") or 0))
        lines = install(req, python, req["requirements"], mkdirs(place("tmp")))
        checked = import_check(python, req["import_names"], req)
        marker_path = os.path.join(prefix, MARKER)
        marker = read_json(marker_path)
        if marker is not None:
            added = list(marker.get("added") or [])
            added += [r for r in req["requirements"] if r not in added]
            marker["added"] = added
            tmp = marker_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(marker, f)
            os.replace(tmp, marker_path)
    return {"env": prefix, "checked": checked, "uv_lines": lines, "managed": marker is not None}


def op_describe(req: Json) -> Json:
    prefix = os.path.expanduser(req["env"])
    python = os.path.join(prefix, "bin", "python")
    if not os.access(python, os.X_OK):
        return {"exists": False, "env": prefix}
    rc, out = run([python, "-c", LIST_PACKAGES], base_env(req), 60)
    try:
        listing = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {}
    except (ValueError, IndexError):
        listing = {}
    return {
        "exists": True,
        "env": prefix,
        "marker": read_json(os.path.join(prefix, MARKER)),
        "python": listing.get("python"),
        "packages": listing.get("packages", []),
        "size_mb": tree_mb(prefix),
        "others": [os.path.basename(m["dir"]) for m in complete_envs()],
    }


def op_doctor(req: Json) -> Json:
    """Facts for `tether doctor`: the chosen interpreter and its modules, disk, index."""
    python, tried = resolve_python(req, later_steps=False)
    out: Json = {"python": python, "tried": tried}
    if python:
        out["python_facts"] = python_facts(python["path"], req)
    data = data_root()
    out["free_mb"] = free_mb(data)
    out["data_dir"] = data
    env = base_env(req)
    quota = shutil.which("quota", path=env["PATH"])
    if quota:
        # -q prints only the filesystems where a limit is exceeded
        rc, text = run([quota, "-q"], env, 10)
        out["quota"] = {"rc": rc, "text": tail(text, 5)}
    out["index"] = index_reachable(req.get("index_urls") or [])
    if req.get("modules"):
        found = module_python(req) if req.get("module_init") else None
        rc, text = run(with_modules(["true"], req), env, 60)
        out["modules"] = {
            "ok": rc == 0 and bool(req.get("module_init")),
            "rc": rc,
            "text": tail(text, 3),
            "python": found,
        }
    return out


def op_reach(req: Json) -> Json:
    """Online or not, and which wheels the server has (for `tether install`)."""
    if req.get("offline") == "auto":
        reach = index_reachable(req.get("index_urls") or [])
    else:
        reach = {"reachable": not req.get("offline"), "detail": "set in the profile"}
    wheels = sorted(os.listdir(place("wheels"))) if os.path.isdir(place("wheels")) else []
    return {"index": reach, "wheels": wheels, "uv": os.access(place("bin", "uv"), os.X_OK)}


LISTENER = r"""
import os, socket, sys, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(1)
s.settimeout(30)
try:
    c, _ = s.accept()
    c.sendall(b"tether-ok\n")
    c.close()
except OSError:
    pass
finally:
    os.unlink(path)
    os.rmdir(os.path.dirname(path))
"""


def op_listen(req: Json) -> Json:
    """A throwaway Unix socket that answers one connection (or gives up after 30 s), for
    `tether doctor` to test whether sshd allows forwarding to Unix sockets."""
    import tempfile

    d = tempfile.mkdtemp(prefix="tether-doctor-")
    path = os.path.join(d, "s")
    subprocess.Popen(
        [sys.executable, "-c", LISTENER, path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"sock": path, "listening": os.path.exists(path)}


OPS = {
    "prepare": op_prepare,
    "python": op_python,
    "build": op_build,
    "install": op_install,
    "describe": op_describe,
    "doctor": op_doctor,
    "listen": op_listen,
    "reach": op_reach,
}


def main() -> int:
    line = sys.stdin.readline()
    try:
        req = json.loads(line)
        op = OPS[req["op"]]
    except (ValueError, KeyError, TypeError):
        answer: Json = {"ok": False, "kind": "bad_request", "message": "bad request"}
    else:
        try:
            answer = dict(op(req), ok=True)
        except BuildError as exc:
            answer = dict(exc.extra, ok=False, kind=exc.kind, message=exc.message, hint=exc.hint)
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            answer = {
                "ok": False,
                "kind": "disk_full" if full else "os_error",
                "message": "%s%s: %s"
                % ("the disk is full: " if full else "", exc.filename or "", exc.strerror),
                "hint": "free some space or raise the quota; the previous environment is untouched"
                if full
                else "",
            }
    sys.stdout.write("\n" + MARK + " " + json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0


if __name__ in ("__main__", "__tether_agent__"):
    os.umask(0o077)
    sys.exit(main())
