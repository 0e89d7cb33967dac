"""The one user-facing exception type and the documented exit codes.

Every failure a user can cause or fix is a :class:`TetherError` carrying a hint; the
top-level handler in :mod:`jupyter_tether.cli` prints it and exits with its code.
Anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit codes, documented in the README's "Exit codes" table."""

    OK = 0
    ERROR = 1  # a failure that fits none of the classes below
    USAGE = 2  # bad command line (argparse uses 2 as well)
    CONFIG = 3  # the config file or a profile is wrong
    SSH_CONNECT = 4  # ssh could not reach the host (name, route, refused, timeout, jump host)
    SSH_AUTH = 5  # ssh reached the host but could not log in, or the host key changed
    REMOTE_ENV = 6  # the server lacks something: Jupyter, python, a module, disk space
    SERVER_START = 7  # Jupyter was launched but did not become ready, or crashed
    LOCAL_PORT = 8  # the local port is busy, privileged or otherwise unusable
    NOT_FOUND = 9  # no such server or profile is known
    PROVISION = 10  # building the environment failed
    SCHEDULER = 11  # the batch scheduler refused the job, or it can never start
    CONFLICT = 12  # `tether sync`: a file changed on both sides (both versions kept)
    INTERNAL = 70  # a bug in jupyter-tether (EX_SOFTWARE)
    INTERRUPTED = 130  # Ctrl-C


class TetherError(Exception):
    """A failure with a message for the user, a hint on what to do, and an exit code."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        code: ExitCode = ExitCode.ERROR,
        details: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code
        self.details = details

    def as_json(self) -> dict[str, object]:
        """The error as ``--json`` prints it on stdout: one object, with the exit code."""
        out: dict[str, object] = {"error": self.message, "hint": self.hint, "code": int(self.code)}
        if self.details:
            out["details"] = self.details
        return out

    def render(self) -> str:
        lines = [f"error: {self.message}"]
        if self.details:
            lines.extend("  " + line for line in self.details.rstrip().splitlines())
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)
