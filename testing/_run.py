"""Running the short commands the sandbox is built with."""

from __future__ import annotations

import os
from collections.abc import Sequence

from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.proc import Result, run

POLL = 0.05


def is_root() -> bool:
    return os.geteuid() == 0


def require_root(what: str) -> None:
    if not is_root():
        raise TetherError(f"{what} needs root", hint="run it as root (sudo), or skip it")


def check(result: Result, what: str, *, code: ExitCode = ExitCode.ERROR) -> Result:
    """Raise a :class:`TetherError` naming ``what`` and the command when it failed."""
    if not result.ok:
        raise TetherError(
            f"{what} failed (exit {result.returncode}): {' '.join(result.argv)}",
            details=(result.stderr or result.stdout).strip()[-2000:] or None,
            code=code,
        )
    return result


def must(
    argv: Sequence[str],
    what: str,
    *,
    timeout: float = 30,
    env: dict[str, str] | None = None,
    code: ExitCode = ExitCode.ERROR,
) -> Result:
    """Run a short command that must succeed."""
    return check(run(argv, timeout=timeout, env=env, stdin_devnull=True), what, code=code)
