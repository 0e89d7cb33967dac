"""How the agent will start one Jupyter: which one, with what argv and config.

Pure planning, no process is started here (``launching.py`` does that), so that the
choices (socket or TCP, which config section holds the token, ``--allow-root``) can be
tested on the workstation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from typing import List, Optional, Tuple

from . import core
from .core import Json, Paths, RemoteError

SOCK_MAX = 100  # AF_UNIX paths are limited to ~107 bytes; keep a margin
# run.sh marks and touches the run directory this often, against age-based /tmp
# cleaners (ten days, typically); often enough that new kernels' files are marked soon.
KEEP_EVERY = 20


def which(cmd: str, path: str) -> Optional[str]:
    return shutil.which(cmd, path=path)


def versions_of(jupyter: str) -> Json:
    """Versions of the Jupyter packages next to ``jupyter`` (same env), cheaply."""
    try:
        out = subprocess.run(
            [python_of(jupyter), "-c", core.snippet("versions.py")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        ).stdout
        data = json.loads(out.decode() or "{}")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}
    return data if isinstance(data, dict) else {}


def python_of(jupyter: str) -> str:
    """The interpreter of the environment ``jupyter`` belongs to."""
    here = os.path.join(os.path.dirname(jupyter), "python")
    if os.access(here, os.X_OK):
        return here
    try:
        with open(jupyter, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
    except OSError:
        first = ""
    if first.startswith("#!"):
        parts = first[2:].split()
        if parts and os.path.basename(parts[0]) == "env" and len(parts) > 1:
            return parts[1]
        if parts:
            return parts[0]
    return sys.executable


def vtuple(v: Optional[str]) -> Tuple[int, ...]:
    """``"2.14.1rc1"`` -> ``(2, 14, 1)``: enough to compare release numbers."""
    out = []
    for part in (v or "0").split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
        if m.end() < len(part):
            break  # "1rc1": the release number ends here
    return tuple(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_jupyter(req: Json) -> Tuple[str, str]:
    """The ``jupyter`` to run and the PATH to run it with."""
    login_path = req.get("path") or os.environ.get("PATH", "/usr/bin:/bin")
    env_prefix = req.get("env")
    if env_prefix:
        env_prefix = os.path.expanduser(env_prefix)
        jupyter = os.path.join(env_prefix, "bin", "jupyter")
        if not os.access(jupyter, os.X_OK):
            raise RemoteError(
                "jupyter_not_found",
                "no Jupyter in the environment %s (looked for %s)" % (req["env"], jupyter),
                "check the profile's `env` path, or install jupyterlab into it",
            )
        return jupyter, os.path.join(env_prefix, "bin") + os.pathsep + login_path
    found = which("jupyter", login_path)
    if not found:
        raise RemoteError(
            "jupyter_not_found",
            "Jupyter is not installed on this server (no `jupyter` on the login PATH)",
            'set `env = "~/path/to/venv"` in the profile, or install jupyterlab '
            "(`pip install --user jupyterlab`)",
        )
    return found, login_path


def plan_jupyter(
    req: Json, config_path: str, versions: Optional[Json] = None
) -> Tuple[List[str], Json, Json]:
    """argv (without where to listen), Jupyter config and facts for the Jupyter ``req``
    asks for. Raises RemoteError when it cannot run.

    ``versions`` (of jupyter_server, notebook, ...) are asked of the environment unless
    given. ``facts["sock_ok"]`` says whether this Jupyter can listen on a Unix socket.
    """
    jupyter, login_path = find_jupyter(req)
    app = req.get("app") or "lab"
    sub = os.path.join(os.path.dirname(jupyter), "jupyter-" + app)
    if not os.access(sub, os.X_OK) and not which("jupyter-" + app, login_path):
        raise RemoteError(
            "jupyter_not_found",
            "`jupyter %s` is not available next to %s" % (app, jupyter),
            'install %s into that environment, or set app = "%s"'
            % (
                "jupyterlab" if app == "lab" else "notebook",
                "notebook" if app == "lab" else "lab",
            ),
        )
    if versions is None:
        versions = versions_of(jupyter)
    server_v = vtuple(versions.get("jupyter_server"))
    classic = app == "notebook" and vtuple(versions.get("notebook")) < (7,)
    if classic:
        sock_ok = vtuple(versions.get("notebook")) >= (6, 1)
        section = "NotebookApp"
    else:
        sock_ok = server_v >= (1, 9)
        section = "IdentityProvider" if server_v >= (2,) else "ServerApp"
    config: Json = {section: {"token": req["token"]}}
    root_dir = os.path.expanduser(req.get("root_dir") or "~")
    if not os.path.isdir(root_dir):
        raise RemoteError(
            "bad_root_dir",
            "root_dir %s does not exist on the server" % root_dir,
            "create it, or change root_dir in the profile",
        )
    app_section = "NotebookApp" if classic else "ServerApp"
    argv = [
        jupyter,
        app,
        "--no-browser",
        "--config=" + config_path,
        "--KernelManager.transport=ipc",
        "--%s.%s=%s" % (app_section, "notebook_dir" if classic else "root_dir", root_dir),
    ]
    if os.geteuid() == 0:
        argv.append("--allow-root")  # containers where the only account is root
    facts: Json = {
        "versions": versions,
        "jupyter": jupyter,
        "path": login_path,
        "sock_ok": sock_ok,
        "app_section": app_section,
    }
    return argv, config, facts


def plan_launch(
    req: Json, p: Paths, rundir: str, versions: Optional[Json] = None
) -> Tuple[List[str], Json, Json]:
    """argv, Jupyter config and facts for one launch in ``rundir``: on a Unix socket
    there, or on TCP 127.0.0.1 when asked or when this Jupyter is too old for one."""
    argv, config, facts = plan_jupyter(req, p.config, versions)
    transport = req.get("transport") or "socket"
    if transport == "socket" and not facts["sock_ok"]:
        transport = "tcp"  # too old for --sock: fall back, and say so
    facts["transport"] = transport
    if transport == "socket":
        sock = os.path.join(rundir, "jupyter.sock")
        if len(sock.encode()) > SOCK_MAX:
            raise RemoteError(
                "sock_path_too_long",
                "the socket path %s is longer than %d bytes" % (sock, SOCK_MAX),
                'set TMPDIR or XDG_RUNTIME_DIR to a shorter directory, or transport = "tcp"',
            )
        argv.append("--sock=" + sock)
        facts["sock"] = sock
    else:
        port = free_port()
        section = facts["app_section"]
        argv += ["--ip=127.0.0.1", "--port=%d" % port, "--%s.port_retries=50" % section]
        facts["port_requested"] = port
    return argv, config, facts


def snapshot_config_line(folder: str) -> str:
    """The shell line that puts the snapshot hook's config dir (``folder``) on
    JUPYTER_CONFIG_PATH: added to, not replacing, one of the profile's env_vars."""
    from shlex import quote

    return (
        "JUPYTER_CONFIG_PATH=%s${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}; "
        "export JUPYTER_CONFIG_PATH" % quote(folder)
    )


def launch_env(req: Json, p: Paths, rundir: str, argv: List[str], facts: Json) -> str:
    """The text of launch.env, which run.sh sources: settings and argv, no secrets."""
    from shlex import quote as q

    lines = [
        "# written by jupyter-tether; sourced by run.sh (no secrets in here)",
        "TETHER_NAME=%s" % q(p.name),
        "TETHER_RUNDIR=%s" % q(rundir),
        "TETHER_LOG=%s" % q(p.log),
        "TETHER_PIDFILE=%s" % q(os.path.join(rundir, "jupyter.pid")),
        "TETHER_NICE=%d" % int(req.get("nice", 10)),
        "TETHER_MODULES=%s" % q(" ".join(req.get("modules") or [])),
        "TETHER_MODULE_INIT=%s" % q(req.get("module_init") or ""),
        "TETHER_MAX_STARTS=%d" % int(req.get("max_restarts", 5) + 1),
        "TETHER_RESTART_WINDOW=%d" % int(req.get("restart_window", 120)),
        "TETHER_KEEP_EVERY=%d" % KEEP_EVERY,
        "PATH=%s" % q(facts["path"]),
        "JUPYTER_RUNTIME_DIR=%s" % q(os.path.join(rundir, "runtime")),
        "export PATH JUPYTER_RUNTIME_DIR",
    ]
    for key, value in sorted((req.get("env_vars") or {}).items()):
        lines.append("%s=%s; export %s" % (key, q(str(value)), key))
    if req.get("snapshots"):
        lines.append(snapshot_config_line(p.snapshot_config))
    lines.append("set -- " + " ".join(q(a) for a in argv))
    return "\n".join(lines) + "\n"
