"""Copying files to the server over the ssh master: tars into the data directory, and uv.

The sh that receives them on the server lives in ``scripts/``; it reaches the server as
the command of an ssh session, so the account's login shell parses it first.
"""

from __future__ import annotations

import shlex
import time
from functools import cache
from importlib import resources
from pathlib import Path

from jupyter_tether import output, proc, ssh
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.probe import Probe
from jupyter_tether.provision.builder_calls import builder_python
from jupyter_tether.provision.index import UV_VERSION, say_rate, uv_wheel


@cache
def script(name: str) -> str:
    """``scripts/<name>`` as one line: its comment lines dropped, the rest joined with
    spaces (sh: each line ends where a space may follow) or "; " (Python: one simple
    statement a line). A newline inside quotes is an error in tcsh, so none is sent."""
    text = resources.files(__package__).joinpath(f"scripts/{name}").read_text(encoding="utf-8")
    lines = (line.strip() for line in text.splitlines())
    code = [line for line in lines if line and not line.startswith("#")]
    return ("; " if name.endswith(".py") else " ").join(code)


def remote_command(name: str, *args: str) -> str:
    """The ssh command that runs ``scripts/<name>`` under sh with ``args`` as $1, $2..."""
    return " ".join(["sh", "-c", shlex.quote(script(name)), "sh", *map(shlex.quote, args)])


def push(
    target: ssh.Target, archive: Path, subdir: str, *, gz: bool, meter: output.Meter | None = None
) -> proc.Result:
    """Copy ``archive`` (a tar) over the ssh master and unpack it into DATA/``subdir``."""
    command = remote_command("push.sh", subdir, "-xzf" if gz else "-xf")
    return _send(target, archive, command, subdir, meter)


def _send(
    target: ssh.Target, file: Path, command: str, subdir: str, meter: output.Meter | None
) -> proc.Result:
    """Feed ``file`` to ``command`` (sh, on the server, over the master), which puts it
    into DATA/``subdir``; a failure is an ssh error or a copy error naming the disk."""
    argv = [*target.command_argv(), command]
    fed = meter.add if meter is not None else None
    res = proc.run(argv, stdin_file=file, timeout=1800, fed=fed)
    if res.returncode == 255 and "tar" not in res.stderr:
        raise ssh.ssh_error(target, res.stderr, res.returncode)
    if not res.ok:
        full = "no space left" in res.stderr.lower() or "quota" in res.stderr.lower()
        raise TetherError(
            f"{target.destination}: copying to ~/.local/share/jupyter-tether/{subdir} failed"
            + (": the disk is full (or over quota)" if full else ""),
            hint="free some space on the server" if full else "rerun with --verbose",
            code=ExitCode.PROVISION,
            details=res.stderr.strip()[-1000:] or None,
        )
    return res


def install_uv(
    target: ssh.Target, found: Probe, index_url: str | None, progress: output.Progress
) -> None:
    """Copy the uv wheel as it is (deflated: 19 MB rather than a 44 MB binary) and let
    the server's python3 take the binary out, so nothing is repacked here."""
    wheel = uv_wheel(found, index_url, progress)
    member = f"uv-{UV_VERSION}.data/scripts/uv"
    command = remote_command("push_uv.sh", builder_python(found), script("unzip_uv.py"), member)
    size = wheel.stat().st_size
    start = time.monotonic()
    with progress.meter(f"copying uv {UV_VERSION}", size) as meter:
        _send(target, wheel, command, "bin", meter)
    progress.bytes_copied += size
    say_rate(progress, f"copied uv {UV_VERSION}", size, time.monotonic() - start)
