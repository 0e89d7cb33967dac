"""The one subprocess wrapper, and the workstation's view of running processes.

:func:`run` takes argv lists only (never a shell string), logs the argv at debug level
(callers never put secrets in argv: tokens travel over stdin), and turns a missing
executable into a plain-words error instead of a traceback. :func:`pid_alive`,
:func:`descendants` and :func:`terminate` read and end process trees from ``/proc``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
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
    fed: Callable[[int], None] | None = None,
) -> Result:
    """Run ``argv`` to completion and return what it said.

    ``capture=False`` lets the child use the terminal (ssh prompts, ``attach``).
    ``stdin_file`` feeds a file's bytes to the child (copying files over ssh); with
    ``fed``, through a pipe that reports each chunk's size as the child takes it.
    """
    log.debug("run: %s", shlex.join(argv))
    start = time.monotonic()
    stdin: int | IO[bytes] | None = subprocess.DEVNULL if stdin_devnull and input is None else None
    opened = stdin_file.open("rb") if stdin_file is not None else None
    pipe_end: int | None = None
    if opened is not None and fed is not None:
        pipe_end = _pump(opened, fed)
        stdin = pipe_end
    elif opened is not None:
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
        if pipe_end is not None:
            os.close(pipe_end)  # a pump still writing gets EPIPE and ends
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


def _pump(source: IO[bytes], fed: Callable[[int], None]) -> int:
    """A pipe's read end for the child; a thread copies ``source`` into the other end."""
    read_end, write_end = os.pipe()

    def copy() -> None:
        # OSError: the child went away (EPIPE); ValueError: run() closed the source.
        with contextlib.suppress(OSError, ValueError), open(write_end, "wb") as sink:
            while chunk := source.read(1 << 18):
                sink.write(chunk)
                fed(len(chunk))

    threading.Thread(target=copy, daemon=True).start()
    return read_end


def package_hint(program: str) -> str:
    return {"ssh": "openssh-client", "sshd": "openssh-server"}.get(program, program)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process of ours.

    A zombie still answers signal 0 but has finished all the same; a process we may not
    signal (another user's, which the pid may have been reused for) is not ours.
    """
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    with contextlib.suppress(OSError):
        # The command name in field 2 may contain spaces and parentheses.
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def descendants(pid: int) -> list[list[int]]:
    """The descendants of ``pid`` by generation: children, grandchildren, ..."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    generations: list[list[int]] = []
    current = [pid]
    while current:
        current = [child for parent in current for child in parents.get(parent, [])]
        if current:
            generations.append(current)
    return generations


def terminate(pids: Sequence[int], *, timeout: float = 5.0) -> None:
    """SIGTERM ``pids``, wait until they are gone, SIGKILL what is left (all bounded)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(pid_alive(p) for p in pids):
            return
