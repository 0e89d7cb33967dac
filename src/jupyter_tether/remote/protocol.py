"""The workstation <-> server protocol: what each operation answers, and the error kinds.

Every call sends one JSON request (``op`` and its fields) to a server-side program and
reads one JSON answer. On success the answer has ``ok: true`` and the fields below; on
failure ``ok: false`` and a :class:`Failure`. ``jupyter_tether/clients.py`` has one
method per operation and turns a kind into a documented exit code (README, "Exit
codes"); ``tests/test_protocol_unit.py`` pins that every kind the programs can raise is
listed here. Python >= 3.8 syntax, standard library only, like the programs.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict


class _Failure(TypedDict):
    ok: bool
    kind: str
    message: str


class Failure(_Failure, total=False):
    hint: str
    log_tail: str  # the agent's: the server log's last lines
    output: str  # the builder's: the last lines of uv's output
    tried: List[str]  # the builder's: interpreters it looked at


# --- the agent (remote/agent.py) --------------------------------------------------------


class SnapshotSettings(TypedDict):
    every: float  # seconds between two snapshots of a changing notebook
    keep: int  # per notebook


class UpRequest(TypedDict):
    name: str
    token: str  # on stdin, never in argv
    app: str
    env: Optional[str]
    root_dir: str
    nice: int
    modules: List[str]
    module_init: Optional[str]
    env_vars: Dict[str, str]
    path: Optional[str]
    transport: str
    startup_timeout: float
    run_sh: str
    snapshots: Optional[SnapshotSettings]  # with keep_outputs (remote/snapshots.py)


class ServerState(TypedDict):
    """``servers/NAME/state.json``, as the agent wrote it (never with the token)."""

    name: str
    pid: int
    sock: Optional[str]
    port: Optional[int]
    transport: str
    app: str
    versions: Dict[str, str]
    jupyter: str
    python: str
    root_dir: str
    rundir: str
    launcher: str
    log: str
    path: str
    hostname: str
    started: float


class _UpAnswer(ServerState):
    reused: bool
    token: str


class UpAnswer(_UpAnswer, total=False):
    api: Optional[Dict[str, Any]]
    address: str  # where ``port`` is, when not on the server's 127.0.0.1 (a job's node)


class _Health(TypedDict):
    state: str  # running, restarting, failed, dead, unresponsive, orphaned, elsewhere


class Health(_Health, total=False):
    detail: str
    pid: int
    api: Dict[str, Any]
    log_tail: str


class Recorded(ServerState):
    health: Health


class Stopped(TypedDict):
    """``stopped/NAME.json``: the last ``tether down`` of a server no longer recorded."""

    by: str  # user@host of the workstation that ran it
    at: float


class _StatusAnswer(TypedDict):
    servers: List[Recorded]
    hostname: str


class StatusAnswer(_StatusAnswer, total=False):
    stopped: Dict[str, Stopped]  # asked-for names that `tether down` stopped


class _DownAnswer(TypedDict):
    stopped: bool
    how: str  # api, sigterm, sigkill, not running, unknown


class DownAnswer(_DownAnswer, total=False):
    pid: Optional[int]


class SyncWhere(TypedDict):
    remote: str  # the folder: relative to root_dir unless absolute
    root_dir: str


class SyncedFile(TypedDict):
    sha256: str
    size: int


class SyncListAnswer(TypedDict):
    """The complete files under a synced folder; the others, and why (``syncing.py``)."""

    folder: str
    exists: bool
    files: Dict[str, SyncedFile]
    deferred: Dict[str, str]  # not complete now: being saved, just changed, torn
    skipped: Dict[str, str]  # never synced: over the size limit
    rsync: Optional[str]  # the server's rsync, for big transfers; None: it has none
    staging: Optional[str]  # where rsync stages a push (with rsync only)


class SyncContent(TypedDict):
    sha256: str
    data: str  # base64


class SyncReadAnswer(TypedDict):
    files: Dict[str, SyncContent]
    deferred: Dict[str, str]


class SyncWriteAnswer(TypedDict):
    written: List[str]
    changed: List[str]  # not what the workstation listed any more: not written
    open: List[str]  # a notebook with a live session, without force: not written
    backups: List[str]  # where the replaced files were copied first
    unstaged: List[str]  # marked staged but not in the staging directory whole: not written


class Backup(TypedDict):
    stamp: str
    path: str  # relative to folder
    size: int
    folder: str  # the synced folder it was taken from


class BackupsAnswer(TypedDict):
    backups: List[Backup]


class RestoreAnswer(TypedDict):
    restored: str
    kept: Optional[str]  # where the file it replaced was backed up


class Snapshot(TypedDict):
    id: str  # sorts by time
    time: float  # epoch seconds
    size: int
    cells: Optional[int]  # None when the file does not parse


class SnapshotsAnswer(TypedDict):
    root_dir: str
    snapshots: Dict[str, List[Snapshot]]  # notebook path (relative) -> newest first


class SnapshotRestoreAnswer(TypedDict):
    path: str
    restored: str
    saved_as: Optional[str]  # the id the file that was there became; None if none was


class LogsAnswer(TypedDict):
    log: str
    text: str


class _AutostartAnswer(TypedDict):
    hook: Optional[str]  # systemd, cron, or None when removed


class AutostartAnswer(_AutostartAnswer, total=False):
    detail: str
    command: List[str]
    removed: List[str]


class Ran(TypedDict):
    """A scheduler command the agent ran for the workstation, as it answered."""

    rc: int
    stdout: str
    stderr: str


class _JobSubmitAnswer(Ran):
    session: str
    versions: Dict[str, str]


class JobSubmitAnswer(_JobSubmitAnswer, total=False):
    host_key: Optional[str]  # the bridge sshd's public host key, to pin


class JobRecord(TypedDict, total=False):
    name: str
    submitted: float
    login_host: str
    stdout: str  # what sbatch --parsable printed: JOBID[;CLUSTER]
    cluster: Optional[str]


class Ready(TypedDict, total=False):
    """``ready.json``, written by job.sh once Jupyter listens."""

    job: str
    node: str
    sock: str
    pid: int
    rundir: str
    sshd: str  # the node's sshd, for the stdio bridge ("" when there is none)
    address: str  # with TCP: the node's address Jupyter listens on ("" on a socket)
    port: Optional[int]  # with TCP: the port it got
    started: float


class _Ended(TypedDict):
    how: str
    at: float


class Ended(_Ended, total=False):
    job: str


class _JobStatusAnswer(TypedDict):
    session: str
    exists: bool
    job: Optional[JobRecord]
    ready: Optional[Ready]
    ended: Optional[Ended]
    warned: Optional[float]


class JobStatusAnswer(_JobStatusAnswer, total=False):
    squeue: Ran
    output: str
    token: Optional[str]
    host_key: Optional[str]


class JobCancelAnswer(TypedDict):
    cancel: Optional[Ran]
    session: str


# --- the builder (remote/builder.py) ----------------------------------------------------


class Interpreter(TypedDict):
    path: str
    version: List[int]
    how: str


class Reach(TypedDict):
    reachable: bool
    detail: str


class _PrepareAnswer(TypedDict):
    exists: bool
    env: str


class PrepareAnswer(_PrepareAnswer, total=False):
    python: Optional[Interpreter]
    python_facts: Dict[str, Any]
    tried: List[str]
    index: Reach
    wheels: List[str]
    free_mb: int
    uv: bool


class PythonAnswer(TypedDict):
    python: Interpreter
    python_facts: Dict[str, Any]
    tried: List[str]


class _BuildAnswer(TypedDict):
    env: str
    built: bool
    cleaned: List[str]


class BuildAnswer(_BuildAnswer, total=False):
    removed: List[str]
    checked: List[str]
    uv_lines: List[str]
    timings: Dict[str, float]
    size_mb: int


class InstallAnswer(TypedDict):
    env: str
    checked: List[str]
    uv_lines: List[str]
    managed: bool


class DevelopAnswer(TypedDict):
    env: str
    installed: List[str]  # the synced folders, installed editable
    uv_lines: List[str]
    autoreload: bool  # on in the env's kernels afterwards


class _DescribeAnswer(TypedDict):
    exists: bool
    env: str


class DescribeAnswer(_DescribeAnswer, total=False):
    marker: Optional[Dict[str, Any]]
    python: Optional[str]
    packages: List[List[str]]
    size_mb: int
    others: List[str]


class _DoctorAnswer(TypedDict):
    python: Optional[Interpreter]
    tried: List[str]
    free_mb: int
    data_dir: str
    index: Reach


class DoctorAnswer(_DoctorAnswer, total=False):
    python_facts: Dict[str, Any]
    quota: Dict[str, Any]
    modules: Dict[str, Any]


class ListenAnswer(TypedDict):
    sock: str
    listening: bool


class ReachAnswer(TypedDict):
    index: Reach
    wheels: List[str]
    uv: bool


# --- error kinds ------------------------------------------------------------------------

# Raised by the shared core (remote/core.py) in either program.
CORE_KINDS = frozenset({"bad_request", "disk_full", "os_error", "locked", "unsafe_dir"})
# The shell wrapper's, before any program runs (clients.py).
WRAPPER_KINDS = frozenset({"no_python"})

AGENT_KINDS = (
    CORE_KINDS
    | WRAPPER_KINDS
    | {
        "start_failed",
        "timeout",
        "not_found",
        "jupyter_not_found",
        "bad_root_dir",
        "sock_path_too_long",
        "no_autostart",
        "elsewhere",
        "jupyter_too_old",
    }
)

BUILDER_KINDS = (
    CORE_KINDS
    | WRAPPER_KINDS
    | {
        "bad_kernel",
        "venv_failed",
        "install_failed",
        "import_failed",
        "conflict",
        "no_package",
        "no_wheel",
        "no_env",
        "no_python",
        "not_a_package",
    }
)
