"""How the builder runs things: a clean environment, the profile's modules, bounded time."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Dict, List, Tuple

from .core import Json, place


def shlex_quote(s: str) -> str:
    if re.match(r"^[A-Za-z0-9_./:=+@%-]+$", s):
        return s
    return "'" + s.replace("'", "'\"'\"'") + "'"


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


def free_mb(path: str) -> int:
    while not os.path.isdir(path):
        path = os.path.dirname(path) or "/"
    st = os.statvfs(path)
    return int(st.f_bavail * st.f_frsize // (1024 * 1024))


def tree_mb(path: str) -> int:
    """The disk space under ``path``, hard links counted once."""
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
