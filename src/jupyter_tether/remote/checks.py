"""The builder's questions before any work: which Python, online or not, how much
space, what ``tether doctor`` should know, and whether Unix-socket forwarding works."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import List

from . import core
from .core import Json, RemoteError, place
from .envs import MARKER, check_space, env_dir
from .interpreters import module_python, python_facts, resolve_python
from .runner import base_env, free_mb, run, tail, with_modules


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


def reach(req: Json) -> Json:
    """Whether to install from the index or from sent wheels, per the profile."""
    if req.get("offline") == "auto":
        return index_reachable(req.get("index_urls") or [])
    return {"reachable": not req.get("offline"), "detail": "set in the profile"}


def wheels_here() -> List[str]:
    return sorted(os.listdir(place("wheels"))) if os.path.isdir(place("wheels")) else []


def op_prepare(req: Json) -> Json:
    """Before any copying: is the env there, which python, online or not, what space,
    which wheels the server already has. Cheap; takes no lock."""
    final = env_dir(req["env_name"])
    if os.path.isfile(os.path.join(final, MARKER)):
        return {"exists": True, "env": final}
    incoming = core.mkdirs(place("envs", ".incoming"))
    check_space(incoming, int(req.get("min_free_mb") or 0))
    python, tried = resolve_python(req, later_steps=False)
    return {
        "exists": False,
        "env": final,
        "python": python,
        "python_facts": python_facts(python["path"], req) if python else {},
        "tried": tried,
        "index": reach(req),
        "wheels": wheels_here(),
        "free_mb": free_mb(incoming),
        "uv": os.access(place("bin", "uv"), os.X_OK),
    }


def op_python(req: Json) -> Json:
    """Chain steps 3 and 4 (uv-managed CPython, source build), once uv is on the server."""
    python, tried = resolve_python(req, later_steps=True)
    if python is None:
        raise RemoteError(
            "no_python",
            "no usable Python >= 3.9 on the server. Tried:\n  " + "\n  ".join(tried),
            'install python3 (>= 3.9), set python = "/path/to/python3" or '
            '"module:NAME" in the profile, give uv a mirror (env_vars '
            "UV_PYTHON_INSTALL_MIRROR), or allow build_from_source = true",
            tried=tried,
        )
    return {"python": python, "python_facts": python_facts(python["path"], req), "tried": tried}


def op_reach(req: Json) -> Json:
    """Online or not, and which wheels the server has (for `tether install`)."""
    return {
        "index": reach(req),
        "wheels": wheels_here(),
        "uv": os.access(place("bin", "uv"), os.X_OK),
    }


def op_doctor(req: Json) -> Json:
    """Facts for `tether doctor`: the chosen interpreter and its modules, disk, index."""
    python, tried = resolve_python(req, later_steps=False)
    out: Json = {"python": python, "tried": tried}
    if python:
        out["python_facts"] = python_facts(python["path"], req)
    data = core.data_root()
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


def op_listen(req: Json) -> Json:
    """A throwaway Unix socket that answers one connection (or gives up after 30 s), for
    `tether doctor` to test whether sshd allows forwarding to Unix sockets."""
    d = tempfile.mkdtemp(prefix="tether-doctor-")
    path = os.path.join(d, "s")
    subprocess.Popen(
        [sys.executable, "-c", core.snippet("listener.py"), path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"sock": path, "listening": os.path.exists(path)}
