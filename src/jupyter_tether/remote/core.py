"""What every server-side program shares: errors, places, private files, the lock, the
request loop.

Standard library only, Python >= 3.8: the agent runs under the Python of the Jupyter it
manages, the builder under whatever python3 the server has. The workstation ships this
module with each program (``jupyter_tether/assemble.py``), so both always run the same
copy.

The server-side layout, defined here once:

``$XDG_STATE_HOME`` (or ``~/.local/state``)/jupyter-tether/, the agent's:
    servers/NAME/state.json          0600  pid, socket, app, versions, started, ...
    servers/NAME/jupyter_config.json 0600  the token, as Jupyter config (not argv, not env)
    servers/NAME/request.json        0600  the settings of the last `up` (no token)
    servers/NAME/launch.env, run.sh        how to start it again (no secrets)
    locks/NAME.lock                        one `up`/`down` at a time per server
    stopped/NAME.json                0600  who ran `tether down` and when (kept 7 days;
                                           removed by the next start)
    logs/NAME.log                    0600  the server's output
    jobs/NAME/                       0700  a server run as a batch job (the session dir):
        jupyter_config.json          0600  the token, as Jupyter config
        job.env                            settings and argv for job.sh (no secrets)
        job.json                           the job id and how it was submitted
        ready.json                         written by the job: node, socket, pid
        warned, ended.json                 written by the job: the end is near, it ended
        output.log                         the job's output (sbatch --output)
        bridge_host_key, bridge_keys       the per-job sshd of the stdio bridge

``$XDG_DATA_HOME`` (or ``~/.local/share``)/jupyter-tether/, the builder's:
    bin/uv                       uv, copied from the workstation (never downloaded here)
    cache/                       uv's cache (same filesystem as envs/: hard links)
    python/                      uv-managed CPython builds, when one was needed
    wheels/                      wheels the workstation sent for offline installs
    envs/NAME-HASH/              complete environments (.tether-env.json marks them)
    envs/.incoming/NAME-HASH.PID environments being built; renamed into place when good
    envs/.lock                   one build at a time per account
    agent.py                     the agent as one file, for the autostart hook
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import stat
import sys
import time
from typing import Any, Callable, Dict, List, Optional

MARK = "@@TETHER-JSON@@"
Json = Dict[str, Any]
Op = Callable[[Json], Json]


class RemoteError(Exception):
    """A failure the workstation turns into a message, a hint and an exit code.

    ``kind`` is one of the kinds in ``remote/protocol.py``; ``extra`` goes into the
    answer as it is (the builder's ``tried``, ``output``, ``free_mb``...).
    """

    def __init__(
        self, kind: str, message: str, hint: str = "", log_tail: str = "", **extra: Any
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.hint = hint
        self.log_tail = log_tail
        self.extra = extra

    def answer(self) -> Json:
        out = dict(self.extra, ok=False, kind=self.kind, message=self.message, hint=self.hint)
        if self.log_tail:
            out["log_tail"] = self.log_tail
        return out


# --- places ---------------------------------------------------------------------------


def state_root() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "jupyter-tether")


def data_root() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "jupyter-tether")


def place(*parts: str) -> str:
    """A path under the builder's data root."""
    return os.path.join(data_root(), *parts)


def servers_root() -> str:
    return os.path.join(state_root(), "servers")


class Paths:
    """The agent's files for the server called ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.root = state_root()
        self.server = os.path.join(self.root, "servers", name)
        self.state = os.path.join(self.server, "state.json")
        self.config = os.path.join(self.server, "jupyter_config.json")
        self.launch_env = os.path.join(self.server, "launch.env")
        self.run_sh = os.path.join(self.server, "run.sh")
        self.request = os.path.join(self.server, "request.json")
        # With keep_outputs: a Jupyter config dir (JUPYTER_CONFIG_PATH) that loads the
        # snapshot hook (remote/snapshots.py).
        self.snapshot_config = os.path.join(self.server, "snapshot-config")
        self.lock = os.path.join(self.root, "locks", name + ".lock")
        self.log = os.path.join(self.root, "logs", name + ".log")
        self.stopped = os.path.join(self.root, "stopped", name + ".json")


class JobPaths:
    """The session directory of the server ``name`` run as a batch job.

    It lives on the login node's (shared) home, so every login node and the job's
    compute node see the same files.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.session = os.path.join(state_root(), "jobs", name)
        self.config = os.path.join(self.session, "jupyter_config.json")
        self.job_env = os.path.join(self.session, "job.env")
        self.job = os.path.join(self.session, "job.json")
        self.ready = os.path.join(self.session, "ready.json")
        self.ended = os.path.join(self.session, "ended.json")
        self.warned = os.path.join(self.session, "warned")
        self.output = os.path.join(self.session, "output.log")
        self.host_key = os.path.join(self.session, "bridge_host_key")
        self.bridge_keys = os.path.join(self.session, "bridge_keys")
        self.snapshot_config = os.path.join(self.session, "snapshot-config")  # as Paths'
        self.lock = os.path.join(state_root(), "locks", "job-" + name + ".lock")


# --- files ----------------------------------------------------------------------------


def private_dir(path: str) -> str:
    """mkdir 0700, or check that an existing directory is ours, a real dir, and private."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise RemoteError("unsafe_dir", "%s is a symlink or not a directory" % path)
    if st.st_uid != os.getuid():
        raise RemoteError("unsafe_dir", "%s belongs to uid %d, not to us" % (path, st.st_uid))
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def private_tree(path: str) -> str:
    """``path`` and any missing parents, the last one checked by :func:`private_dir`."""
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent, 0o700, exist_ok=True)
    return private_dir(path)


def mkdirs(path: str) -> str:
    os.makedirs(path, 0o700, exist_ok=True)
    return path


def write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically, 0600, never through a symlink."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_json(path: str) -> Optional[Json]:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def log_tail(path: str, lines: int = 30) -> str:
    """The last ``lines`` lines of a log, reading at most its last 64 KiB."""
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
    """Remove a file or a whole directory; a missing one is fine."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def shipped(rel: str) -> str:
    """The text of the file ``rel`` next to this module (a module, or ``snippets/X``),
    read through this module's loader: from the installed package, or from the stream
    the workstation ships (whose loader serves the shipped files)."""
    path = os.path.join(os.path.dirname(__file__), rel)
    loader: Any = globals().get("__loader__")
    return bytes(loader.get_data(path)).decode("utf-8")


def snippet(name: str) -> str:
    """The text of ``snippets/NAME``: a small program run under another interpreter.

    Read through this module's loader, so it works from the installed package and from
    the stream the workstation ships (whose loader serves the shipped files).
    """
    path = os.path.join(os.path.dirname(__file__), "snippets", name)
    loader: Any = globals().get("__loader__")
    return bytes(loader.get_data(path)).decode("utf-8")


# --- processes ------------------------------------------------------------------------


def pid_alive(pid: Optional[int]) -> bool:
    """Whether ``pid`` is a live process of ours (a zombie or another user's is not)."""
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


class Lock:
    """An exclusive flock on ``path`` with a deadline: one writer at a time.

    Raises kind ``locked`` with ``message`` and ``hint`` when the deadline passes.
    """

    def __init__(self, path: str, timeout: float, message: str, hint: str) -> None:
        self.path = path
        self.timeout = timeout
        self.message = message
        self.hint = hint
        self.fd = -1

    def __enter__(self) -> Lock:
        private_tree(os.path.dirname(self.path))
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(self.fd)
                    raise
            if time.monotonic() > deadline:
                os.close(self.fd)
                raise RemoteError("locked", self.message, self.hint)
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def busy_lock(path: str, timeout: float, what: str) -> Lock:
    """One tether command at a time on ``what`` (a server, a job)."""
    return Lock(
        path,
        timeout,
        "another tether command is working on %s" % what,
        "wait for it to finish, or retry in a minute",
    )


# --- the request loop -----------------------------------------------------------------

_OS_HINTS = {
    errno.ENOSPC: "free some space in your home on the server (`du -sh ~/.*`)",
    errno.EDQUOT: "you are over your disk quota on the server (`quota -s`)",
    errno.EROFS: "your home on the server is read-only; set XDG_STATE_HOME or "
    "XDG_DATA_HOME to a writable directory there, or ask the administrators",
}


def os_error_answer(exc: OSError) -> Json:
    """An OSError as an answer: ``disk_full`` for ENOSPC and EDQUOT, else ``os_error``."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return {
        "ok": False,
        "kind": "disk_full" if full else "os_error",
        "message": "%s%s: %s"
        % ("the disk is full: " if full else "", exc.filename or "", exc.strerror),
        "hint": _OS_HINTS.get(exc.errno or 0, "check that you can write to that path"),
    }


def handle(ops: Dict[str, Op], req: Any, full_hint: str = "") -> Json:
    """Run one request against ``ops`` and return its answer (never raises but for bugs).

    ``full_hint`` replaces the hint for a full disk or quota, where the program knows
    better what is at stake."""
    try:
        op = ops[req["op"]]
    except (KeyError, TypeError):
        return {"ok": False, "kind": "bad_request", "message": "bad request"}
    try:
        return dict(op(req), ok=True)
    except RemoteError as exc:
        return exc.answer()
    except OSError as exc:
        answer = os_error_answer(exc)
        if full_hint and answer["kind"] == "disk_full":
            answer["hint"] = full_hint
        return answer


def answer_line(answer: Json) -> str:
    """The answer as the workstation looks for it: after a newline, on a marked line, so
    that login-shell chatter cannot be mistaken for it."""
    return "\n" + MARK + " " + json.dumps(answer) + "\n"


def serve(ops: Dict[str, Op], argv: List[str], full_hint: str = "") -> int:
    """One request: a JSON line on stdin, or ``PROGRAM OP NAME`` (the autostart hook).

    Exits 0 whenever an answer was written for the workstation to read; from the
    command line, 1 when the operation failed.
    """
    from_argv = len(argv) >= 3
    try:
        req = {"op": argv[1], "name": argv[2]} if from_argv else json.loads(sys.stdin.readline())
    except ValueError:
        req = None
    answer = handle(ops, req, full_hint)
    sys.stdout.write(answer_line(answer))
    sys.stdout.flush()
    return 0 if answer.get("ok") or not from_argv else 1
