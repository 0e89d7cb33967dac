"""The agent's ``up`` and ``revive``: start Jupyter detached, wait until it answers.

Jupyter runs under run.sh (the server-side watchdog) in tmux, screen or a new session,
in a private run directory (0700) that holds the socket, the kernels' ipc sockets and
Jupyter's runtime files: ``$XDG_RUNTIME_DIR/jupyter-tether/NAME`` when lingering keeps
that directory across logouts, else ``/tmp/jupyter-tether-UID/NAME``.
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, Optional

from . import core, planning, servers
from .core import Json, Paths, RemoteError


def run_base() -> str:
    """The private parent of run directories (see the module docstring for the choice)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or ""
    # systemd removes XDG_RUNTIME_DIR at logout unless the user lingers: a socket there
    # would vanish under a server that is meant to survive logout.
    if xdg and os.path.isdir(xdg) and user and os.path.exists("/var/lib/systemd/linger/" + user):
        try:
            return core.private_dir(os.path.join(xdg, "jupyter-tether"))
        except (RemoteError, OSError):
            pass
    tmp = "/tmp"
    try:
        return core.private_dir(os.path.join(tmp, "jupyter-tether-%d" % os.getuid()))
    except (RemoteError, OSError):
        # Somebody squatted on the predictable name: route around it, never follow it.
        return tempfile.mkdtemp(prefix="jupyter-tether-%d-" % os.getuid(), dir=tmp)


def clean_env(facts: Json) -> Dict[str, str]:
    env = dict(os.environ)
    for key in ("JUPYTER_PORT", "JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE", "TMUX", "STY"):
        env.pop(key, None)
    env["PATH"] = facts["path"]
    return env


def start_detached(req: Json, p: Paths, rundir: str, facts: Json) -> str:
    """Start run.sh so that it survives logout: tmux, else screen, else setsid."""
    env = clean_env(facts)
    tmux = planning.which("tmux", facts["path"])
    screen = planning.which("screen", facts["path"])
    launcher = req.get("launcher") or "auto"
    null = subprocess.DEVNULL
    if tmux and launcher in ("auto", "tmux"):
        # A private tmux socket in the 0700 run dir: other users can't attach, and the
        # user's own tmux server and ~/.tmux.conf are left alone.
        argv = [tmux, "-f", "/dev/null", "-S", os.path.join(rundir, "tmux.sock")]
        argv += ["new-session", "-d", "-s", "tether", "-x", "160", "-y", "48"]
        argv += ["sh " + shlex.quote(p.run_sh)]
        subprocess.run(argv, env=env, stdin=null, stdout=null, stderr=null, check=True)
        return "tmux"
    if screen and launcher in ("auto", "screen"):
        argv = [screen, "-dmS", "tether-" + p.name, "sh", p.run_sh]
        subprocess.run(argv, env=env, stdin=null, stdout=null, stderr=null, check=True)
        return "screen"
    subprocess.Popen(
        ["sh", p.run_sh],
        env=env,
        stdin=null,
        stdout=null,
        stderr=null,
        start_new_session=True,
        close_fds=True,
    )
    return "setsid"


def _read_pid(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def wait_ready(p: Paths, rundir: str, facts: Json, deadline: float) -> Json:
    """Poll GET /api on the socket (or port) until it answers, the process dies, or time is up."""
    pidfile = os.path.join(rundir, "jupyter.pid")
    runtime = os.path.join(rundir, "runtime")
    pid = None
    st: Json = {"sock": facts.get("sock")}
    delay = 0.05
    while time.monotonic() < deadline:
        pid = _read_pid(pidfile) or pid  # re-read: run.sh writes its own pid, then Jupyter's
        if pid is not None and not core.pid_alive(pid):
            raise RemoteError(
                "start_failed",
                "Jupyter exited during start-up",
                "read the log above; `tether logs NAME` shows all of it",
                core.log_tail(p.log),
            )
        if pid is not None and not st.get("sock") and not st.get("port"):
            info = core.read_json(os.path.join(runtime, "jpserver-%d.json" % pid))
            info = info or core.read_json(os.path.join(runtime, "nbserver-%d.json" % pid))
            if info and info.get("port"):
                st["port"] = int(info["port"])  # the real port, never an assumed one
        if pid is not None and (st.get("sock") or st.get("port")):
            try:
                status, _ = servers.http_request(st, "GET", "/api", timeout=2)
                if status == 200:
                    st["pid"] = pid
                    return st
            except (OSError, http.client.HTTPException):
                pass
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise RemoteError(
        "timeout",
        "Jupyter did not answer within the start-up deadline",
        "the server may be slow or overloaded; raise startup_timeout in the profile",
        core.log_tail(p.log),
    )


def _append_log_header(p: Paths) -> None:
    # The log is ours alone: Jupyter never prints the token, but be strict anyway.
    fd = os.open(p.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    os.write(fd, ("--- jupyter-tether: starting %s at %s\n" % (p.name, stamp)).encode())
    os.close(fd)
    os.chmod(p.log, 0o600)


def _reuse_or_clear(p: Paths, req: Json) -> Optional[Json]:
    """The answer for a healthy recorded server; else clear a dead one away (keeping its
    token in ``req``, so an open browser tab keeps working) and return None."""
    old = core.read_json(p.state)
    if old is None:
        return None
    h = servers.health(p, old)
    if h["state"] == "running":
        return dict(
            servers.public_state(old),
            pid=h.get("pid") or old.get("pid"),
            reused=True,
            token=servers.read_token(p),
            api=h.get("api"),
        )
    if h["state"] == "elsewhere":
        raise RemoteError(
            "elsewhere",
            "a server named %s is recorded as running on %s, not on this node (%s)"
            % (p.name, old.get("hostname"), socket.gethostname()),
            "connect to that node, or `tether down` it there first",
        )
    # Dead (a reboot, everything killed) or failed: start it again with the same token.
    token = servers.read_token(p)
    if token:
        req["token"] = token
    servers.stop_processes(p, old, token)
    servers.forget(p, old)
    return None


def _clear_unrecorded(p: Paths, rundir: str) -> None:
    """Stop and remove what a server with no record left in its run dir.

    Its record goes with the home (an account reset) while /tmp stays: a stale
    jupyter.pid there would read as "Jupyter exited during start-up", a stale "ready" or
    "stop" would mislead run.sh (SECURITY.md: Robustness). What still runs from there is
    stopped first.
    """
    if os.path.islink(rundir) or not os.path.isdir(rundir):
        core.remove_quietly(rundir)
        return
    core.private_dir(rundir)  # ours, or refuse
    tmux = os.path.exists(os.path.join(rundir, "tmux.sock"))
    leftover: Json = {"rundir": rundir, "launcher": "tmux" if tmux else None}
    leftover["pid"] = _read_pid(os.path.join(rundir, "jupyter.pid"))
    servers.stop_processes(p, leftover, None)
    core.remove_quietly(rundir)


def write_snapshot_config(folder: str, settings: Optional[Json]) -> None:
    """With keep_outputs, ``folder``: the Jupyter config dir that hooks every notebook
    save to take snapshots (remote/snapshots.py, shipped as it is); without, no such
    dir. A server of its own and a batch job's (remote/jobs.py) both get it."""
    if not settings:
        core.remove_quietly(folder)
        return
    core.private_dir(folder)
    # jupyter_config, the one name Jupyter looks up on its config path even when
    # --config names the config file (jupyter_core's JupyterApp.load_config_file).
    files = {
        "tether_snapshots.py": core.shipped("snapshots.py"),
        "jupyter_config.py": core.snippet("snapshots_config.py"),
        "snapshots.json": json.dumps(
            {"every": float(settings["every"]), "keep": int(settings["keep"])}
        ),
    }
    for name, text in files.items():
        core.write_private(os.path.join(folder, name), text)


def _launch(req: Json, p: Paths, rundir: str, deadline: float) -> Json:
    """Start Jupyter in ``rundir``; on any failure, stop what started and remove it all."""
    launcher = None
    facts: Json = {}
    try:
        core.private_dir(os.path.join(rundir, "runtime"))
        argv, config, facts = planning.plan_launch(req, p, rundir)
        core.write_private(p.config, json.dumps(config))
        write_snapshot_config(p.snapshot_config, req.get("snapshots"))
        core.write_private(p.launch_env, planning.launch_env(req, p, rundir, argv, facts))
        core.write_private(p.run_sh, req["run_sh"])
        os.chmod(p.run_sh, 0o700)
        _append_log_header(p)
        launcher = start_detached(req, p, rundir, facts)
        ready = wait_ready(p, rundir, facts, deadline)
    except BaseException:
        partial: Json = {"rundir": rundir, "launcher": launcher, "path": facts.get("path")}
        partial["pid"] = _read_pid(os.path.join(rundir, "jupyter.pid"))
        servers.stop_processes(p, partial, None)
        servers.forget(p, partial)
        raise
    return dict(ready, launcher=launcher, facts=facts)


def op_up(req: Json) -> Json:
    p = Paths(req["name"])
    req = dict(req)
    core.private_tree(core.servers_root())
    core.private_tree(os.path.dirname(p.log))
    startup = float(req.get("startup_timeout") or 90)
    deadline = time.monotonic() + startup
    with servers.server_lock(p, startup + 30):
        reused = _reuse_or_clear(p, req)
        if reused is not None:
            return reused
        core.private_dir(p.server)
        rundir = os.path.join(run_base(), p.name)
        if os.path.lexists(rundir):
            _clear_unrecorded(p, rundir)
        rundir = core.private_dir(rundir)
        ready = _launch(req, p, rundir, deadline)
        facts = ready["facts"]
        # jpserver-PID-open.html carries the token and is 0644; the run dir is private,
        # but don't leave it lying around anyway (ServerApp.no_browser_open_file is not
        # configurable in jupyter_server 2.21).
        for entry in os.listdir(os.path.join(rundir, "runtime")):
            if entry.endswith("-open.html"):
                core.remove_quietly(os.path.join(rundir, "runtime", entry))
        # From now on the watchdog in run.sh restarts Jupyter when it dies.
        core.write_private(os.path.join(rundir, "ready"), "")
        stored = {k: v for k, v in req.items() if k != "token"}
        core.write_private(p.request, json.dumps(stored))
        st = {
            "name": p.name,
            "pid": ready["pid"],
            "sock": ready.get("sock"),
            "port": ready.get("port"),
            "transport": facts["transport"],
            "app": req.get("app") or "lab",
            "versions": facts["versions"],
            "jupyter": facts["jupyter"],
            "python": sys.executable,
            "root_dir": req.get("root_dir") or "~",
            "rundir": rundir,
            "launcher": ready["launcher"],
            "log": p.log,
            "path": facts["path"],
            "hostname": socket.gethostname(),
            "started": time.time(),
        }
        core.write_private(p.state, json.dumps(st))
        core.remove_quietly(p.stopped)  # started again: no longer stopped by `down`
        return dict(st, reused=False, token=req["token"])


def not_recorded(p: Paths, hint: str = "start it with `tether up`") -> RemoteError:
    return RemoteError("not_found", "no server called %s is recorded here" % p.name, hint)


def op_revive(req: Json) -> Json:
    """Start a recorded server again with its stored settings and token (after a reboot,
    from the autostart hook; or when the workstation finds it dead)."""
    p = Paths(req["name"])
    stored = core.read_json(p.request)
    token = servers.read_token(p)
    if stored is None or token is None:
        raise not_recorded(p)
    return op_up(dict(stored, token=token, op="up"))
