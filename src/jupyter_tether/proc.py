"""The one subprocess wrapper.

Takes argv lists only (never a shell string), logs the argv at debug level (callers
never put secrets in argv: tokens travel over stdin), and turns a missing executable
into a plain-words error instead of a traceback.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from jupyter_tether.errors import ExitCode, TetherError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = True,
    stdin_devnull: bool = False,
    stdin_file: Path | None = None,
) -> Result:
    """Run ``argv`` to completion and return what it said.

    ``capture=False`` lets the child use the terminal (ssh prompts, ``attach``).
    ``stdin_file`` feeds a file's bytes to the child (copying files over ssh).
    """
    log.debug("run: %s", shlex.join(argv))
    start = time.monotonic()
    stdin: int | IO[bytes] | None = subprocess.DEVNULL if stdin_devnull and input is None else None
    opened = stdin_file.open("rb") if stdin_file is not None else None
    if opened is not None:
        stdin = opened
    try:
        cp = subprocess.run(
            list(argv),
            input=input,
            stdin=stdin,
            capture_output=capture,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except FileNotFoundError as exc:
        raise TetherError(
            f"cannot run {argv[0]!r}: it is not installed or not on PATH",
            hint=f"install {argv[0]} (on Debian/Ubuntu: apt install {package_hint(argv[0])})",
            code=ExitCode.ERROR,
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise TetherError(
            f"{argv[0]} did not finish within {timeout:g} s",
            hint="the host may be unreachable or very slow; --verbose shows the command",
            code=ExitCode.SSH_CONNECT if argv[0].endswith("ssh") else ExitCode.ERROR,
        ) from exc
    finally:
        if opened is not None:
            opened.close()
    seconds = time.monotonic() - start
    log.debug("  -> rc=%d in %.2fs", cp.returncode, seconds)
    return Result(
        argv=tuple(argv),
        returncode=cp.returncode,
        stdout=cp.stdout if capture else "",
        stderr=cp.stderr if capture else "",
        seconds=seconds,
    )


def package_hint(program: str) -> str:
    return {"ssh": "openssh-client", "sshd": "openssh-server"}.get(program, program)
