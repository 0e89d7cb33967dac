"""The agent's view of recorded servers: their health, stopping them, their logs.

A server is recorded in ``servers/NAME/state.json`` (``core.py`` has the layout).
``tether down`` leaves ``stopped/NAME.json`` behind (who, when), so that another
workstation's supervisor can tell a deliberate stop from a crash (README: Always connected).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from typing import List, Optional, Tuple

from . import core
from .core import Json, Paths


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def http_request(
    st: Json, method: str, path: str, token: Optional[str] = None, timeout: float = 5.0
) -> Tuple[int, bytes]:
    """One request to the server recorded in ``st``, on its socket (or its port)."""
    conn: http.client.HTTPConnection
    if st.get("sock"):
        conn = UnixHTTPConnection(st["sock"], timeout)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", int(st["port"]), timeout=timeout)
    headers = {"Host": "localhost"}
    if token:
        headers["Authorization"] = "token " + token
    try:
        conn.request(method, path, body=b"" if method == "POST" else None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def read_token(p: Paths) -> Optional[str]:
    return read_token_file(p.config)


def read_token_file(path: str) -> Optional[str]:
    """The token in a Jupyter config file the agent wrote (any Jupyter's section)."""
    cfg = core.read_json(path)
    if not cfg:
        return None
    for section in ("IdentityProvider", "ServerApp", "NotebookApp"):
        token = cfg.get(section, {}).get("token")
        if token:
            return str(token)
    return None


def runs(pid: Optional[int], word: str) -> bool:
    """Is ``pid`` alive and running something with ``word`` in its command line?

    After a reboot a recorded pid may belong to an unrelated process of ours: never
    signal a pid just because it is alive.
    """
    if pid is None or not core.pid_alive(pid):
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return word.encode() in f.read()
    except OSError:
        return not os.path.isdir("/proc")  # no procfs: trust the pid file


def _pid_file(st: Json, name: str) -> Optional[int]:
    try:
        return int(core.read_text(os.path.join(st.get("rundir") or "/nonexistent", name)))
    except ValueError:
        return None


def live_pid(st: Json) -> Optional[int]:
    """Jupyter's current pid: the run dir's pid file (the watchdog may have restarted it)."""
    pid = _pid_file(st, "jupyter.pid")
    if pid is None and isinstance(st.get("pid"), int):
        pid = st["pid"]
    return pid if runs(pid, "jupyter") else None


def loop_pid(st: Json) -> Optional[int]:
    """The pid of run.sh, the server-side watchdog loop."""
    pid = _pid_file(st, "run.pid")
    return pid if runs(pid, "run.sh") else None


def health(p: Paths, st: Json) -> Json:
    """Is the recorded server alive and answering an authenticated request?

    States: running, restarting (the watchdog is bringing it back), failed (a crash
    loop, with the reason and the log's tail), dead (nothing runs), unresponsive,
    orphaned (it runs, but its socket file was removed: nothing can reach it again),
    elsewhere (recorded on another node of a shared home).
    """
    if st.get("hostname") and st["hostname"] != socket.gethostname():
        return {"state": "elsewhere", "detail": "runs on " + st["hostname"]}
    failed = core.read_text(os.path.join(st.get("rundir") or "/nonexistent", "failed"))
    pid = live_pid(st)
    if not core.pid_alive(pid):
        if failed:
            return {"state": "failed", "detail": failed, "log_tail": core.log_tail(p.log, 20)}
        if loop_pid(st) is not None:
            return {"state": "restarting", "detail": "the watchdog is starting Jupyter again"}
        return {"state": "dead", "detail": "process %s is gone" % pid}
    if st.get("sock") and not os.path.exists(st["sock"]):
        # An age-based /tmp cleaner, or a hand: the listening socket has no name any
        # more, so no client can connect. Only a restart helps, and it ends the kernels.
        return {
            "state": "orphaned",
            "detail": "its socket %s was removed (a /tmp cleaner?): the server still runs "
            "but nothing can reach it; starting it again loses the kernels' state" % st["sock"],
            "pid": pid,
        }
    try:
        status, body = http_request(
            st, "GET", "/api/status?no_track_activity=1", read_token(p), timeout=5
        )
    except (OSError, http.client.HTTPException) as exc:
        return {"state": "unresponsive", "detail": str(exc), "pid": pid}
    if status != 200:
        return {"state": "unresponsive", "detail": "GET /api/status answered %d" % status}
    try:
        api = json.loads(body.decode())
    except ValueError:
        api = {}
    return {"state": "running", "api": api, "pid": pid}


def _wait_gone(pid: int, seconds: float) -> None:
    end = time.monotonic() + seconds
    while core.pid_alive(pid) and time.monotonic() < end:
        time.sleep(0.05)


def _quiet(argv: List[str]) -> None:
    null = subprocess.DEVNULL
    subprocess.run(argv, stdout=null, stderr=null, stdin=null, check=False)


def stop_processes(p: Paths, st: Json, token: Optional[str]) -> str:
    """Shut a server down: REST first (clean kernel shutdown), then SIGTERM, then SIGKILL.

    The "stop" file tells the watchdog loop in run.sh not to start Jupyter again.
    """
    rundir = st.get("rundir")
    if rundir and os.path.isdir(rundir):
        core.write_private(os.path.join(rundir, "stop"), "down\n")
    pid = live_pid(st)
    how = "not running"
    if isinstance(pid, int) and core.pid_alive(pid):
        how = "api"
        try:
            http_request(st, "POST", "/api/shutdown", token, timeout=5)
        except (OSError, http.client.HTTPException):
            pass
        for sig, wait, name in (
            (None, 5.0, "api"),
            (signal.SIGTERM, 5.0, "sigterm"),
            (signal.SIGKILL, 2.0, "sigkill"),
        ):
            if sig is not None and core.pid_alive(pid):
                how = name
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
            _wait_gone(pid, wait)
            if not core.pid_alive(pid):
                break
    loop = loop_pid(st)
    if loop is not None:
        _wait_gone(loop, 2)  # it exits by itself once it sees the stop file
        if core.pid_alive(loop):
            try:
                os.kill(loop, signal.SIGTERM)
            except ProcessLookupError:
                pass
    keeper = _pid_file(st, "keep.pid")  # run.sh's loop that keeps /tmp cleaners off
    if keeper is not None and runs(keeper, "run.sh"):
        try:
            os.kill(keeper, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _wait_gone(keeper, 2)
    path = st.get("path") or os.environ.get("PATH")
    if st.get("launcher") == "tmux" and rundir:
        tsock = os.path.join(rundir, "tmux.sock")
        tmux = shutil.which("tmux", path=path)
        if tmux and os.path.exists(tsock):
            _quiet([tmux, "-S", tsock, "kill-server"])
    elif st.get("launcher") == "screen":
        screen = shutil.which("screen", path=path)
        if screen:
            _quiet([screen, "-S", "tether-" + p.name, "-X", "quit"])
    return how


def forget(p: Paths, st: Optional[Json]) -> None:
    """Remove everything a server left except its log: run dir, socket, state, token."""
    if st and st.get("rundir"):
        core.remove_quietly(st["rundir"])
    core.remove_quietly(p.server)


def public_state(st: Json) -> Json:
    return {k: v for k, v in st.items() if k != "token"}


def op_status(req: Json) -> Json:
    root = core.servers_root()
    if req.get("name"):
        names = [req["name"]]
    else:
        names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    servers = []
    stopped: Json = {}
    for name in names:
        p = Paths(name)
        st = core.read_json(p.state)
        if st is None:
            marker = core.read_json(p.stopped)
            if marker is not None:
                stopped[name] = marker
            continue
        servers.append(dict(public_state(st), health=health(p, st)))
    return {"servers": servers, "hostname": socket.gethostname(), "stopped": stopped}


def server_lock(p: Paths, timeout: float) -> core.Lock:
    """One `up`/`down` at a time per server: two `up`s at once yield one server."""
    return core.busy_lock(p.lock, timeout, "this server")


def op_down(req: Json) -> Json:
    p = Paths(req["name"])
    with server_lock(p, 60):
        st = core.read_json(p.state)
        if st is None:
            return {"stopped": False, "how": "unknown"}
        pid = live_pid(st)
        how = stop_processes(p, st, read_token(p))
        forget(p, st)
        if req.get("by"):  # `tether down`, not the cleanup of a failed `up`
            mark_stopped(p, str(req["by"]))
        return {"stopped": True, "how": how, "pid": pid}


STOPPED_KEEP = 7 * 86400.0  # seconds a `down` marker is kept (a start removes it sooner)


def mark_stopped(p: Paths, by: str) -> None:
    """Leave word that ``tether down`` stopped this server: who, and when."""
    folder = core.private_tree(os.path.dirname(p.stopped))
    now = time.time()
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        try:
            if now - os.path.getmtime(path) > STOPPED_KEEP:
                core.remove_quietly(path)
        except OSError:
            pass
    core.write_private(p.stopped, json.dumps({"by": by, "at": now}))


def op_logs(req: Json) -> Json:
    p = Paths(req["name"])
    return {"log": p.log, "text": core.log_tail(p.log, int(req.get("lines") or 50))}
