"""jupyter-tether's agent: the part that runs on the server.

Standard library only, Python >= 3.8 (it runs under the Python of the Jupyter it
manages).  The workstation sends this file and one JSON request on stdin (never in
argv: the request may carry the token) and reads one JSON answer from stdout, on a line
starting with ``@@TETHER-JSON@@`` so that login-shell chatter cannot be mistaken for it.

Layout on the server (``$XDG_STATE_HOME`` or ``~/.local/state``)/jupyter-tether/:
    servers/NAME/state.json          0600  pid, socket, app, versions, started, ...
    servers/NAME/jupyter_config.json 0600  the token, as Jupyter config (not argv, not env)
    servers/NAME/launch.env, run.sh        how to start it again (no secrets)
    locks/NAME.lock                        one `up`/`down` at a time per server
    logs/NAME.log                    0600  the server's output
and a private run directory (0700) for the socket, the kernels' ipc sockets and the
Jupyter runtime files: ``$XDG_RUNTIME_DIR/jupyter-tether/NAME`` when lingering keeps
that directory across logouts, else ``/tmp/jupyter-tether-UID/NAME``.
"""

from __future__ import annotations

import errno
import fcntl
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict

MARK = "@@TETHER-JSON@@"
SOCK_MAX = 100  # AF_UNIX paths are limited to ~107 bytes; keep a margin
Json = Dict[str, Any]


class AgentError(Exception):
    def __init__(self, kind: str, message: str, hint: str = "", log_tail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.hint = hint
        self.log_tail = log_tail


# --- places -------------------------------------------------------------------------


def state_root() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "jupyter-tether")


def private_dir(path: str) -> str:
    """mkdir 0700, or check that an existing directory is ours, a real dir, and private."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise AgentError("unsafe_dir", "%s is a symlink or not a directory" % path)
    if st.st_uid != os.getuid():
        raise AgentError("unsafe_dir", "%s belongs to uid %d, not to us" % (path, st.st_uid))
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def private_tree(path: str) -> str:
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent, 0o700, exist_ok=True)
    return private_dir(path)


def run_base() -> str:
    """The private parent of run directories (see the module docstring for the choice)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or ""
    # systemd removes XDG_RUNTIME_DIR at logout unless the user lingers: a socket there
    # would vanish under a server that is meant to survive logout.
    if xdg and os.path.isdir(xdg) and user and os.path.exists("/var/lib/systemd/linger/" + user):
        try:
            return private_dir(os.path.join(xdg, "jupyter-tether"))
        except (AgentError, OSError):
            pass
    tmp = "/tmp"
    try:
        return private_dir(os.path.join(tmp, "jupyter-tether-%d" % os.getuid()))
    except (AgentError, OSError):
        # Somebody squatted on the predictable name: route around it, never follow it.
        return tempfile.mkdtemp(prefix="jupyter-tether-%d-" % os.getuid(), dir=tmp)


def write_private(path: str, text: str) -> None:
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_json(path: str) -> Json | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Paths:
    def __init__(self, name: str) -> None:
        self.name = name
        self.root = state_root()
        self.server = os.path.join(self.root, "servers", name)
        self.state = os.path.join(self.server, "state.json")
        self.config = os.path.join(self.server, "jupyter_config.json")
        self.launch_env = os.path.join(self.server, "launch.env")
        self.run_sh = os.path.join(self.server, "run.sh")
        self.request = os.path.join(self.server, "request.json")
        self.lock = os.path.join(self.root, "locks", name + ".lock")
        self.log = os.path.join(self.root, "logs", name + ".log")


# --- locking ------------------------------------------------------------------------


class Lock:
    """flock on locks/NAME.lock: two `up`s at once yield one server."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.fd = -1

    def __enter__(self) -> "Lock":
        private_tree(os.path.dirname(self.path))
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if time.monotonic() > deadline:
                raise AgentError(
                    "locked",
                    "another tether command is working on this server",
                    "wait for it to finish, or retry in a minute",
                )
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


# --- talking to Jupyter -------------------------------------------------------------


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
    st: Json, method: str, path: str, token: str | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
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


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # a pid reused by another user's process is not our server
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().split(") ")[-1].startswith("Z"):
                return False  # a zombie waiting for its parent is dead to us
    except OSError:
        pass
    return True


def read_token(p: Paths) -> str | None:
    cfg = read_json(p.config)
    if not cfg:
        return None
    for section in ("IdentityProvider", "ServerApp", "NotebookApp"):
        token = cfg.get(section, {}).get("token")
        if token:
            return str(token)
    return None


def read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def runs(pid: int | None, word: str) -> bool:
    """Is ``pid`` alive and running something with ``word`` in its command line?

    After a reboot a recorded pid may belong to an unrelated process of ours: never
    signal a pid just because it is alive.
    """
    if pid is None or not pid_alive(pid):
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return word.encode() in f.read()
    except OSError:
        return not os.path.isdir("/proc")  # no procfs: trust the pid file


def _pid_file(st: Json, name: str) -> int | None:
    try:
        return int(read_text(os.path.join(st.get("rundir") or "/nonexistent", name)))
    except ValueError:
        return None


def live_pid(st: Json) -> int | None:
    """Jupyter's current pid: the run dir's pid file (the watchdog may have restarted it)."""
    pid = _pid_file(st, "jupyter.pid")
    if pid is None and isinstance(st.get("pid"), int):
        pid = st["pid"]
    return pid if runs(pid, "jupyter") else None


def loop_pid(st: Json) -> int | None:
    """The pid of run.sh, the server-side watchdog loop."""
    pid = _pid_file(st, "run.pid")
    return pid if runs(pid, "run.sh") else None


def health(p: Paths, st: Json) -> Json:
    """Is the recorded server alive and answering an authenticated request?

    States: running, restarting (the watchdog is bringing it back), failed (a crash
    loop, with the reason and the log's tail), dead (nothing runs), unresponsive,
    elsewhere (recorded on another node of a shared home).
    """
    if st.get("hostname") and st["hostname"] != socket.gethostname():
        return {"state": "elsewhere", "detail": "runs on " + st["hostname"]}
    failed = read_text(os.path.join(st.get("rundir") or "/nonexistent", "failed"))
    pid = live_pid(st)
    if not pid_alive(pid):
        if failed:
            return {"state": "failed", "detail": failed, "log_tail": log_tail(p.log, 20)}
        if loop_pid(st) is not None:
            return {"state": "restarting", "detail": "the watchdog is starting Jupyter again"}
        return {"state": "dead", "detail": "process %s is gone" % pid}
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


# --- launching ----------------------------------------------------------------------


def which(cmd: str, path: str) -> str | None:
    return shutil.which(cmd, path=path)


def versions_of(jupyter: str) -> Json:
    """Versions of the Jupyter packages next to ``jupyter`` (same env), cheaply."""
    code = (
        "import json\n"
        "try:\n import importlib.metadata as m\n"
        "except ImportError:\n import importlib_metadata as m\n"
        "out = {}\n"
        "for d in ('jupyter_server', 'jupyterlab', 'notebook', 'ipykernel'):\n"
        " try: out[d] = m.version(d)\n"
        " except Exception: pass\n"
        "print(json.dumps(out))\n"
    )
    python = python_of(jupyter)
    try:
        out = subprocess.run(
            [python, "-c", code],
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


def vtuple(v: str | None) -> tuple[int, ...]:
    out = []
    for part in (v or "0").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def remove_quietly(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def plan_launch(req: Json, p: Paths, rundir: str) -> tuple[list[str], Json, Json]:
    """argv, Jupyter config and facts for one launch. Raises AgentError when impossible."""
    login_path = req.get("path") or os.environ.get("PATH", "/usr/bin:/bin")
    env_prefix = req.get("env")
    if env_prefix:
        env_prefix = os.path.expanduser(env_prefix)
        jupyter = os.path.join(env_prefix, "bin", "jupyter")
        if not os.access(jupyter, os.X_OK):
            raise AgentError(
                "jupyter_not_found",
                "no Jupyter in the environment %s (looked for %s)" % (req["env"], jupyter),
                "check the profile's `env` path, or install jupyterlab into it",
            )
        login_path = os.path.join(env_prefix, "bin") + os.pathsep + login_path
    else:
        found = which("jupyter", login_path)
        if not found:
            raise AgentError(
                "jupyter_not_found",
                "Jupyter is not installed on this server (no `jupyter` on the login PATH)",
                'set `env = "~/path/to/venv"` in the profile, or install jupyterlab '
                "(`pip install --user jupyterlab`)",
            )
        jupyter = found
    app = req.get("app") or "lab"
    sub = os.path.join(os.path.dirname(jupyter), "jupyter-" + app)
    if not os.access(sub, os.X_OK) and not which("jupyter-" + app, login_path):
        raise AgentError(
            "jupyter_not_found",
            "`jupyter %s` is not available next to %s" % (app, jupyter),
            'install %s into that environment, or set app = "%s"'
            % (
                "jupyterlab" if app == "lab" else "notebook",
                "notebook" if app == "lab" else "lab",
            ),
        )
    versions = versions_of(jupyter)
    server_v = vtuple(versions.get("jupyter_server"))
    classic = app == "notebook" and vtuple(versions.get("notebook")) < (7,)
    if classic:
        sock_ok = vtuple(versions.get("notebook")) >= (6, 1)
        section = "NotebookApp"
    else:
        sock_ok = server_v >= (1, 9)
        section = "IdentityProvider" if server_v >= (2,) else "ServerApp"
    transport = req.get("transport") or "socket"
    if transport == "socket" and not sock_ok:
        transport = "tcp"  # too old for --sock: fall back, and say so
    token = req["token"]
    config: Json = {section: {"token": token}}
    root_dir = os.path.expanduser(req.get("root_dir") or "~")
    if not os.path.isdir(root_dir):
        raise AgentError(
            "bad_root_dir",
            "root_dir %s does not exist on the server" % root_dir,
            "create it, or change root_dir in the profile",
        )
    app_section = "NotebookApp" if classic else "ServerApp"
    argv = [
        jupyter,
        app,
        "--no-browser",
        "--config=" + p.config,
        "--KernelManager.transport=ipc",
        "--%s.%s=%s" % (app_section, "notebook_dir" if classic else "root_dir", root_dir),
    ]
    facts: Json = {"transport": transport, "versions": versions, "jupyter": jupyter}
    if transport == "socket":
        sock = os.path.join(rundir, "jupyter.sock")
        if len(sock.encode()) > SOCK_MAX:
            raise AgentError(
                "sock_path_too_long",
                "the socket path %s is longer than %d bytes" % (sock, SOCK_MAX),
                'set TMPDIR or XDG_RUNTIME_DIR to a shorter directory, or transport = "tcp"',
            )
        argv.append("--sock=" + sock)
        facts["sock"] = sock
    else:
        port = free_port()
        argv += ["--ip=127.0.0.1", "--port=%d" % port, "--%s.port_retries=50" % app_section]
        facts["port_requested"] = port
    if os.geteuid() == 0:
        argv.append("--allow-root")  # containers where the only account is root
    facts["path"] = login_path
    return argv, config, facts


def write_launch_files(req: Json, p: Paths, rundir: str, argv: list[str], facts: Json) -> None:
    q = shlex.quote
    env_lines = [
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
        "PATH=%s" % q(facts["path"]),
        "JUPYTER_RUNTIME_DIR=%s" % q(os.path.join(rundir, "runtime")),
        "export PATH JUPYTER_RUNTIME_DIR",
    ]
    for key, value in sorted((req.get("env_vars") or {}).items()):
        env_lines.append("%s=%s; export %s" % (key, q(str(value)), key))
    env_lines.append("set -- " + " ".join(q(a) for a in argv))
    write_private(p.launch_env, "\n".join(env_lines) + "\n")
    write_private(p.run_sh, req["run_sh"])
    os.chmod(p.run_sh, 0o700)


def clean_env(facts: Json) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("JUPYTER_PORT", "JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE", "TMUX", "STY"):
        env.pop(key, None)
    env["PATH"] = facts["path"]
    return env


def start_detached(req: Json, p: Paths, rundir: str, facts: Json) -> str:
    """Start run.sh so that it survives logout: tmux, else screen, else setsid."""
    env = clean_env(facts)
    tmux = which("tmux", facts["path"])
    screen = which("screen", facts["path"])
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


def wait_ready(p: Paths, rundir: str, facts: Json, deadline: float) -> Json:
    """Poll GET /api on the socket (or port) until it answers, the process dies, or time is up."""
    pidfile = os.path.join(rundir, "jupyter.pid")
    runtime = os.path.join(rundir, "runtime")
    pid = None
    st: Json = {"sock": facts.get("sock")}
    delay = 0.05
    while time.monotonic() < deadline:
        try:  # re-read: run.sh writes its own pid first, then Jupyter's
            with open(pidfile) as f:
                pid = int(f.read().strip() or 0) or pid
        except (OSError, ValueError):
            pass
        if pid is not None and not pid_alive(pid):
            raise AgentError(
                "start_failed",
                "Jupyter exited during start-up",
                "read the log above; `tether logs NAME` shows all of it",
                log_tail(p.log),
            )
        if pid is not None and not st.get("sock") and not st.get("port"):
            info = read_json(os.path.join(runtime, "jpserver-%d.json" % pid)) or read_json(
                os.path.join(runtime, "nbserver-%d.json" % pid)
            )
            if info and info.get("port"):
                st["port"] = int(info["port"])  # the real port, never an assumed one
        if pid is not None and (st.get("sock") or st.get("port")):
            try:
                status, _ = http_request(st, "GET", "/api", timeout=2)
                if status == 200:
                    st["pid"] = pid
                    return st
            except (OSError, http.client.HTTPException):
                pass
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise AgentError(
        "timeout",
        "Jupyter did not answer within the start-up deadline",
        "the server may be slow or overloaded; raise startup_timeout in the profile",
        log_tail(p.log),
    )


def stop_processes(p: Paths, st: Json, token: str | None) -> str:
    """Shut a server down: REST first (clean kernel shutdown), then SIGTERM, then SIGKILL.

    The "stop" file tells the watchdog loop in run.sh not to start Jupyter again.
    """
    rundir = st.get("rundir")
    if rundir and os.path.isdir(rundir):
        write_private(os.path.join(rundir, "stop"), "down\n")
    pid = live_pid(st)
    how = "not running"
    if isinstance(pid, int) and pid_alive(pid):
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
            if sig is not None and pid_alive(pid):
                how = name
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
            end = time.monotonic() + wait
            while pid_alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if not pid_alive(pid):
                break
    loop = loop_pid(st)
    if loop is not None:
        end = time.monotonic() + 2
        while pid_alive(loop) and time.monotonic() < end:
            time.sleep(0.05)  # it exits by itself once it sees the stop file
        if pid_alive(loop):
            try:
                os.kill(loop, signal.SIGTERM)
            except ProcessLookupError:
                pass
    rundir = st.get("rundir")
    if st.get("launcher") == "tmux" and rundir:
        tsock = os.path.join(rundir, "tmux.sock")
        tmux = shutil.which("tmux", path=st.get("path") or os.environ.get("PATH"))
        if tmux and os.path.exists(tsock):
            subprocess.run(
                [tmux, "-S", tsock, "kill-server"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                check=False,
            )
    elif st.get("launcher") == "screen":
        screen = shutil.which("screen", path=st.get("path") or os.environ.get("PATH"))
        if screen:
            subprocess.run(
                [screen, "-S", "tether-" + p.name, "-X", "quit"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                check=False,
            )
    return how


def forget(p: Paths, st: Json | None) -> None:
    """Remove everything a server left except its log: run dir, socket, state, token."""
    if st and st.get("rundir"):
        remove_quietly(st["rundir"])
    remove_quietly(p.server)


def public_state(st: Json) -> Json:
    return {k: v for k, v in st.items() if k != "token"}


def op_up(req: Json) -> Json:
    p = Paths(req["name"])
    private_tree(os.path.join(p.root, "servers"))
    private_tree(os.path.dirname(p.log))
    deadline = time.monotonic() + float(req.get("startup_timeout") or 90)
    with Lock(p.lock, timeout=float(req.get("startup_timeout") or 90) + 30):
        old = read_json(p.state)
        if old is not None:
            h = health(p, old)
            if h["state"] == "running":
                return dict(
                    public_state(old),
                    pid=h.get("pid") or old.get("pid"),
                    reused=True,
                    token=read_token(p),
                    api=h.get("api"),
                )
            if h["state"] == "elsewhere":
                raise AgentError(
                    "elsewhere",
                    "a server named %s is recorded as running on %s, not on this node (%s)"
                    % (p.name, old.get("hostname"), socket.gethostname()),
                    "connect to that node, or `tether down` it there first",
                )
            # Dead (a reboot, everything killed) or failed: start it again with the same
            # token, so an open browser tab keeps working.
            token = read_token(p)
            if token:
                req = dict(req, token=token)
            stop_processes(p, old, token)
            forget(p, old)
        private_dir(p.server)
        rundir = private_dir(os.path.join(run_base(), p.name))
        try:
            private_dir(os.path.join(rundir, "runtime"))
            argv, config, facts = plan_launch(req, p, rundir)
            write_private(p.config, json.dumps(config))
            write_launch_files(req, p, rundir, argv, facts)
            # The log is ours alone: Jupyter never prints the token, but be strict anyway.
            fd = os.open(p.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            os.write(
                fd,
                (
                    "--- jupyter-tether: starting %s at %s\n"
                    % (p.name, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
                ).encode(),
            )
            os.close(fd)
            os.chmod(p.log, 0o600)
            launcher = start_detached(req, p, rundir, facts)
            ready = wait_ready(p, rundir, facts, deadline)
        except BaseException:
            partial: Json = {
                "rundir": rundir,
                "launcher": locals().get("launcher"),
                "path": locals().get("facts", {}).get("path"),
            }
            pid_path = os.path.join(rundir, "jupyter.pid")
            try:
                with open(pid_path) as f:
                    partial["pid"] = int(f.read().strip() or 0) or None
            except (OSError, ValueError):
                pass
            stop_processes(p, partial, None)
            forget(p, partial)
            raise
        # jpserver-PID-open.html carries the token and is 0644; the run dir is private,
        # but don't leave it lying around anyway (ServerApp.no_browser_open_file is not
        # configurable in jupyter_server 2.21).
        for entry in os.listdir(os.path.join(rundir, "runtime")):
            if entry.endswith("-open.html"):
                remove_quietly(os.path.join(rundir, "runtime", entry))
        # From now on the watchdog in run.sh restarts Jupyter when it dies.
        write_private(os.path.join(rundir, "ready"), "")
        write_private(p.request, json.dumps({k: v for k, v in req.items() if k != "token"}))
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
            "launcher": launcher,
            "log": p.log,
            "path": facts["path"],
            "hostname": socket.gethostname(),
            "started": time.time(),
        }
        write_private(p.state, json.dumps(st))
        return dict(st, reused=False, token=req["token"])


def op_status(req: Json) -> Json:
    root = os.path.join(state_root(), "servers")
    names = (
        [req["name"]]
        if req.get("name")
        else sorted(os.listdir(root))
        if os.path.isdir(root)
        else []
    )
    servers = []
    for name in names:
        p = Paths(name)
        st = read_json(p.state)
        if st is None:
            continue
        h = health(p, st)
        servers.append(dict(public_state(st), health=h))
    return {"servers": servers, "hostname": socket.gethostname()}


def op_down(req: Json) -> Json:
    p = Paths(req["name"])
    with Lock(p.lock, timeout=60):
        st = read_json(p.state)
        if st is None:
            return {"stopped": False, "how": "unknown"}
        pid = live_pid(st)
        how = stop_processes(p, st, read_token(p))
        forget(p, st)
        return {"stopped": True, "how": how, "pid": pid}


def op_revive(req: Json) -> Json:
    """Start a recorded server again with its stored settings and token (after a reboot,
    from the autostart hook; or when the workstation finds it dead)."""
    p = Paths(req["name"])
    stored = read_json(p.request)
    token = read_token(p)
    if stored is None or token is None:
        raise AgentError(
            "not_found",
            "no server called %s is recorded here" % p.name,
            "start it with `tether up`",
        )
    return op_up(dict(stored, token=token, op="up"))


def op_logs(req: Json) -> Json:
    p = Paths(req["name"])
    return {"log": p.log, "text": log_tail(p.log, int(req.get("lines") or 50))}


def data_root() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "jupyter-tether")


def _run_quiet(argv: list[str], stdin: str | None = None) -> tuple[int, str]:
    try:
        cp = subprocess.run(
            argv,
            input=(stdin or "").encode(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return cp.returncode, cp.stdout.decode(errors="replace")


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def systemd_user_ok() -> tuple[bool, str]:
    """A user manager runs, and lingering keeps it alive without a login (or we may enable it)."""
    if not shutil.which("systemctl"):
        return False, "no systemctl"
    rc, out = _run_quiet(["systemctl", "--user", "show-environment"])
    if rc != 0:
        return False, "no systemd user manager (%s)" % out.strip().splitlines()[-1:]
    if os.path.exists("/var/lib/systemd/linger/" + _user()):
        return True, "lingering is enabled"
    if shutil.which("loginctl"):
        rc, out = _run_quiet(["loginctl", "enable-linger", _user()])
        if rc == 0:
            return True, "lingering enabled now"
    return False, "lingering is off and cannot be enabled by this user"


CRON_TAG = "# jupyter-tether:"


def _crontab_lines() -> list[str]:
    rc, out = _run_quiet(["crontab", "-l"])
    return out.splitlines() if rc == 0 else []


def op_autostart(req: Json) -> Json:
    """Install (or remove, with enable=false) a user-level hook that revives the server
    after a reboot: a systemd --user unit when lingering allows it, else @reboot cron."""
    p = Paths(req["name"])
    agent = os.path.join(private_tree(data_root()), "agent.py")
    unit_name = "jupyter-tether-%s.service" % p.name
    unit_dir = os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "systemd", "user"
    )
    unit = os.path.join(unit_dir, unit_name)
    tag = CRON_TAG + p.name
    removed = []
    if os.path.exists(unit):
        _run_quiet(["systemctl", "--user", "disable", unit_name])
        remove_quietly(unit)
        removed.append("systemd")
    if shutil.which("crontab"):
        lines = _crontab_lines()
        kept = [line for line in lines if not line.rstrip().endswith(tag)]
        if kept != lines:
            _run_quiet(["crontab", "-"], "".join(line + "\n" for line in kept))
            removed.append("cron")
    if not req.get("enable"):
        return {"hook": None, "removed": removed}
    if read_json(p.request) is None:
        raise AgentError(
            "not_found",
            "no server called %s is recorded here" % p.name,
            "start it with `tether up` first",
        )
    write_private(agent, req["agent_code"])
    command = [sys.executable, agent, "revive", p.name]
    ok, why = systemd_user_ok()
    if ok:
        os.makedirs(unit_dir, 0o700, exist_ok=True)
        write_private(
            unit,
            "[Unit]\nDescription=jupyter-tether server %s\n\n"
            "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=%s\n\n"
            "[Install]\nWantedBy=default.target\n" % (p.name, " ".join(command)),
        )
        _run_quiet(["systemctl", "--user", "daemon-reload"])
        rc, out = _run_quiet(["systemctl", "--user", "enable", unit_name])
        if rc == 0:
            return {"hook": "systemd", "detail": "%s (%s)" % (unit, why), "command": command}
        remove_quietly(unit)
        why = "systemctl --user enable failed: " + out.strip()
    if shutil.which("crontab"):
        line = "@reboot %s >/dev/null 2>&1 %s" % (" ".join(shlex.quote(c) for c in command), tag)
        rc, out = _run_quiet(["crontab", "-"], "".join(x + "\n" for x in [*_crontab_lines(), line]))
        if rc == 0:
            return {
                "hook": "cron",
                "detail": "@reboot entry in your crontab (%s)" % why,
                "command": command,
            }
        why += "; crontab refused: " + out.strip()
    raise AgentError(
        "no_autostart",
        "autostart is not available on this server (%s; no usable crontab)" % why,
        "ask the administrators to enable lingering (loginctl enable-linger) or cron for you",
    )


OPS = {
    "up": op_up,
    "status": op_status,
    "down": op_down,
    "logs": op_logs,
    "revive": op_revive,
    "autostart": op_autostart,
}


def main(argv: list[str]) -> int:
    """One request: a JSON line on stdin, or ``agent.py OP NAME`` (the autostart hook)."""
    try:
        req = (
            {"op": argv[1], "name": argv[2]} if len(argv) >= 3 else json.loads(sys.stdin.readline())
        )
        op = OPS[req["op"]]
    except (ValueError, KeyError, TypeError):
        answer: Json = {"ok": False, "kind": "bad_request", "message": "bad request"}
    else:
        try:
            answer = dict(op(req), ok=True)
        except AgentError as exc:
            answer = {
                "ok": False,
                "kind": exc.kind,
                "message": exc.message,
                "hint": exc.hint,
                "log_tail": exc.log_tail,
            }
        except OSError as exc:
            kind = "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "os_error"
            hint = {
                errno.ENOSPC: "free some space in your home on the server (`du -sh ~/.*`)",
                errno.EDQUOT: "you are over your disk quota on the server (`quota -s`)",
                errno.EROFS: "your home on the server is read-only; set XDG_STATE_HOME "
                "to a writable directory there, or ask the administrators",
            }.get(exc.errno or 0, "check that you can write to that path on the server")
            answer = {
                "ok": False,
                "kind": kind,
                "message": "%s: %s" % (exc.filename or "", exc.strerror),
                "hint": hint,
            }
    sys.stdout.write("\n" + MARK + " " + json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0 if answer.get("ok") or len(argv) < 3 else 1


if __name__ in ("__main__", "__tether_agent__"):
    os.umask(0o077)
    sys.exit(main(sys.argv))
