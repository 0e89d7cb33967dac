"""The workstation's side of the protocol: one client per server-side program.

Each method is one operation (``remote/protocol.py`` types its answer): it ships the
program whole (``assemble.py``) and one JSON request on ssh's stdin, reads the one
answer, and turns a failure into a :class:`TetherError` with the exit code its kind is
documented to give (README, "Exit codes"). Commands call these methods; none of them
builds a request itself.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, ClassVar, cast

from jupyter_tether import assemble, remote, ssh
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.remote import protocol

MARK = "@@TETHER-JSON@@"  # remote/core.py writes the answer after it
_EOF = "@@TETHER-EOF@@"
# Reads the program's length, then the program, from stdin; the rest is the request.
_BOOT = (
    "import sys;n=int(sys.stdin.readline());"
    "exec(compile(sys.stdin.read(n),'tether-program','exec'),{'__name__':'__tether_program__'})"
)

AGENT_CODES: dict[str, ExitCode] = {
    "bad_request": ExitCode.INTERNAL,  # the workstation sent something the program rejects
    "disk_full": ExitCode.REMOTE_ENV,
    "os_error": ExitCode.REMOTE_ENV,
    "locked": ExitCode.SERVER_START,
    "unsafe_dir": ExitCode.REMOTE_ENV,
    "no_python": ExitCode.REMOTE_ENV,  # the interpreter is missing (see script())
    "start_failed": ExitCode.SERVER_START,
    "timeout": ExitCode.SERVER_START,
    "not_found": ExitCode.NOT_FOUND,  # no server of that name is recorded on the server
    "jupyter_not_found": ExitCode.REMOTE_ENV,
    "bad_root_dir": ExitCode.REMOTE_ENV,
    "sock_path_too_long": ExitCode.REMOTE_ENV,
    "no_autostart": ExitCode.REMOTE_ENV,
    "elsewhere": ExitCode.REMOTE_ENV,
    "jupyter_too_old": ExitCode.REMOTE_ENV,
}
# Every builder failure is a provisioning failure (exit 10), whatever its kind.
BUILDER_CODES: dict[str, ExitCode] = dict.fromkeys(protocol.BUILDER_KINDS, ExitCode.PROVISION)


def exit_code(codes: dict[str, ExitCode], kind: str) -> ExitCode:
    """The exit code for ``kind``; an unknown kind is a bug in jupyter-tether."""
    return codes.get(kind, ExitCode.INTERNAL)


def script(python: str, program: str, request: dict[str, Any]) -> str:
    """The sh text that runs ``program`` under ``python`` with ``request`` on its stdin.

    A here-document, not the rest of ssh's stdin: bash (``sh`` on many distributions)
    reads ahead on pipes, so only a here-document reliably reaches the child.
    """
    code = assemble.bundle(program)
    payload = json.dumps(request)
    if _EOF in payload or _EOF in code:
        raise ValueError("request contains the here-document delimiter")
    missing = json.dumps(
        {
            "ok": False,
            "kind": "no_python",
            "message": f"{python} does not exist or is not executable on the server",
            "hint": "check the profile's `env` path: it should be a venv or conda prefix "
            "with Jupyter installed",
        }
    )
    py = remote.shell_path(python)
    return (
        f"if [ ! -x {py} ]; then\n"
        f"  printf '\\n%s %s\\n' {MARK} {shlex.quote(missing)}; exit 0\nfi\n"
        f"exec {py} -c {shlex.quote(_BOOT)} <<'{_EOF}'\n"
        f"{len(code)}\n{code}{payload}\n{_EOF}\n"
    )


def parse_answer(stdout: str) -> dict[str, Any] | None:
    """The answer on the last marked line of ``stdout``, if any."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK + " "):
            data = json.loads(line[len(MARK) + 1 :])
            return data if isinstance(data, dict) else None
    return None


class Program:
    """A server-side program run by ``python`` on ``target``."""

    name: ClassVar[str]
    codes: ClassVar[dict[str, ExitCode]]
    failed: ClassVar[str]  # the message of a failure that gives none
    hint: ClassVar[str | None]  # the hint of a failure that gives none

    def __init__(self, target: ssh.Target, python: str) -> None:
        self.target = target
        self.interpreter = python

    def error(self, answer: dict[str, Any]) -> TetherError:
        """A failed answer as the error a user sees."""
        kind = str(answer.get("kind", "error"))
        details = None
        if answer.get("log_tail"):
            details = "last lines of the server log:\n" + answer["log_tail"]
        elif answer.get("output"):
            details = str(answer["output"])
        return TetherError(
            f"{self.target.destination}: {answer.get('message') or self.failed}",
            hint=str(answer.get("hint") or "") or self.hint,
            code=exit_code(self.codes, kind),
            details=details,
        )

    def raw(self, op: str, timeout: float, **fields: Any) -> dict[str, Any]:
        """Run ``op`` and return the answer, failed or not (``ok`` tells)."""
        res = ssh.run_script(
            self.target, script(self.interpreter, self.name, {"op": op, **fields}), timeout=timeout
        )
        answer = parse_answer(res.stdout)
        if answer is None:
            detail = ssh.first_meaningful_line(res.stderr) or f"exit status {res.returncode}"
            raise TetherError(
                f"{self.target.destination}: the remote helper did not answer ({detail})",
                hint=f"is {self.interpreter!r} a working Python >= 3.8 on the server? "
                "`tether doctor` checks the server",
                code=ExitCode.REMOTE_ENV,
                details=res.stderr.strip()[-2000:] or None,
            )
        return answer

    def call(self, op: str, timeout: float, **fields: Any) -> dict[str, Any]:
        """Run ``op``; a failed answer raises its :class:`TetherError`."""
        answer = self.raw(op, timeout, **fields)
        if not answer.get("ok"):
            raise self.error(answer)
        return answer


class Agent(Program):
    """``remote/agent.py``, under the Python of the Jupyter it manages."""

    name = "agent"
    codes = AGENT_CODES
    failed = "the remote helper failed"
    hint = None

    def up(self, request: protocol.UpRequest, timeout: float) -> protocol.UpAnswer:
        return cast(protocol.UpAnswer, self.call("up", timeout, **request))

    def status(self, name: str | None = None, timeout: float = 180) -> protocol.StatusAnswer:
        return cast(protocol.StatusAnswer, self.call("status", timeout, name=name))

    def health(
        self, name: str, timeout: float = 180
    ) -> tuple[protocol.Recorded | None, protocol.StatusAnswer]:
        """The server recorded as ``name`` (None when there is none) and the whole answer."""
        answer = self.status(name, timeout)
        servers = answer.get("servers") or []
        return (servers[0] if servers else None), answer

    def down(self, name: str, *, by: str = "", timeout: float = 180) -> protocol.DownAnswer:
        """Stop ``name``; ``by`` (user@host) is left on the server for other workstations."""
        return cast(protocol.DownAnswer, self.call("down", timeout, name=name, by=by))

    def revive(self, name: str, timeout: float = 180) -> protocol.UpAnswer:
        return cast(protocol.UpAnswer, self.call("revive", timeout, name=name))

    def sync_list(
        self, where: protocol.SyncWhere, *, exclude: list[str], max_size: int
    ) -> protocol.SyncListAnswer:
        answer = self.call("sync_list", 120, exclude=exclude, max_size=max_size, **where)
        return cast(protocol.SyncListAnswer, answer)

    def sync_read(
        self, where: protocol.SyncWhere, paths: dict[str, str], *, max_size: int
    ) -> protocol.SyncReadAnswer:
        answer = self.call("sync_read", 300, paths=paths, max_size=max_size, **where)
        return cast(protocol.SyncReadAnswer, answer)

    def sync_write(
        self,
        where: protocol.SyncWhere,
        name: str,
        files: dict[str, Any],
        *,
        force: bool,
        staging: str | None = None,
    ) -> protocol.SyncWriteAnswer:
        """``staging``: the directory (under the listing's ``staging``) that rsync wrote
        the items marked ``staged`` into; removed by the call."""
        answer = self.call(
            "sync_write", 300, name=name, files=files, force=force, staging=staging, **where
        )
        return cast(protocol.SyncWriteAnswer, answer)

    def backups(self, name: str) -> protocol.BackupsAnswer:
        return cast(protocol.BackupsAnswer, self.call("backups_list", 60, name=name))

    def backup_restore(self, name: str, stamp: str, path: str) -> protocol.RestoreAnswer:
        answer = self.call("backup_restore", 120, name=name, stamp=stamp, path=path)
        return cast(protocol.RestoreAnswer, answer)

    def snapshots(self, root_dir: str, path: str | None) -> protocol.SnapshotsAnswer:
        answer = self.call("snapshots_list", 120, root_dir=root_dir, path=path)
        return cast(protocol.SnapshotsAnswer, answer)

    def restore_snapshot(
        self, root_dir: str, path: str | None, snapshot: str, *, keep: int
    ) -> protocol.SnapshotRestoreAnswer:
        """Put ``snapshot`` back; the file there now becomes a snapshot first."""
        answer = self.call(
            "snapshots_restore", 120, root_dir=root_dir, path=path, id=snapshot, keep=keep
        )
        return cast(protocol.SnapshotRestoreAnswer, answer)

    def logs(self, name: str, lines: int = 50, timeout: float = 60) -> protocol.LogsAnswer:
        return cast(protocol.LogsAnswer, self.call("logs", timeout, name=name, lines=lines))

    def autostart(
        self, name: str, *, enable: bool, timeout: float = 180
    ) -> protocol.AutostartAnswer:
        """Install the hook that revives ``name`` after a reboot (or remove it). The hook
        runs this same agent, written to the server as one file."""
        fields: dict[str, Any] = {"name": name, "enable": enable}
        if enable:
            fields["agent_code"] = assemble.bundle("agent")
        return cast(protocol.AutostartAnswer, self.call("autostart", timeout, **fields))

    def job_submit(self, request: dict[str, Any], timeout: float = 120) -> protocol.JobSubmitAnswer:
        """A fresh session directory, then the submit command with job.sh on its stdin."""
        return cast(protocol.JobSubmitAnswer, self.call("job_submit", timeout, **request))

    def job_status(
        self,
        name: str,
        *,
        status_argv: list[str] | None,
        path: str | None,
        output_lines: int = 0,
        timeout: float = 60,
    ) -> protocol.JobStatusAnswer:
        return cast(
            protocol.JobStatusAnswer,
            self.call(
                "job_status",
                timeout,
                name=name,
                status_argv=status_argv,
                path=path,
                output_lines=output_lines,
            ),
        )

    def job_cancel(
        self, name: str, *, cancel_argv: list[str] | None, path: str | None, forget: bool
    ) -> protocol.JobCancelAnswer:
        return cast(
            protocol.JobCancelAnswer,
            self.call(
                "job_cancel", 90, name=name, cancel_argv=cancel_argv, path=path, forget=forget
            ),
        )


class Builder(Program):
    """``remote/builder.py``, under any python3 the server has (before any env exists).

    Its operations, one function each, are in ``provision/builder_calls.py``."""

    name = "builder"
    codes = BUILDER_CODES
    failed = "provisioning failed"
    hint = "rerun with --verbose"
