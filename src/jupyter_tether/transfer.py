"""How a sync's bytes travel: rsync over the ssh master when there are many, else the agent.

One direction of one sync that moves more than ``MANY_FILES`` files or ``MANY_BYTES``
bytes goes by rsync when both sides have it (README: Syncing notebooks), through the
same ControlMaster as every other call: ``-e`` is tether's own ssh argv. rsync copies
only the files the sync chose (``--files-from`` on stdin, NUL-separated, so a name with
a space or a newline is still one name, and no name is in argv), never deletes (no
``--delete`` of any kind), and only into a staging directory. What lands in the folder
is decided afterwards by the agent path's own checks (``sync.py``,
``remote/syncing.py``): the hash that was listed, whole; backups of replaced files; a
write that finds the server's file changed is refused. Whatever rsync did not deliver
whole goes by the agent.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from jupyter_tether import proc, ssh
from jupyter_tether.errors import TetherError

MANY_FILES = 20  # more files than this in one direction: rsync
MANY_BYTES = 2 * 1024 * 1024  # more bytes than this in one direction: rsync
TIMEOUT = 600.0  # seconds for one rsync run
# rsync's exit codes for "some files were not transferred" (rsync(1), EXIT VALUES): what
# did arrive is still checked file by file; the rest goes by the agent.
PARTIAL = (23, 24)

# What rsync can take as the host of HOST:PATH and hand to ssh: an alias or
# [user@]host. Others (ssh:// URLs, [v6]:port) go by the agent.
_PLAIN = re.compile(r"^([A-Za-z0-9._%+-]+@)?[A-Za-z0-9._%+-]+$")


@dataclass(frozen=True)
class Choice:
    how: str  # "rsync" or "agent"
    why: str


def big(files: int, size: int) -> bool:
    return files > MANY_FILES or size > MANY_BYTES


def choose(
    *, files: int, size: int, target: ssh.Target, here: str | None, there: str | None
) -> Choice:
    """rsync or the agent for one direction of ``files`` files of ``size`` bytes in all;
    ``here``/``there``: the workstation's and the server's rsync (None: not installed)."""
    if not big(files, size):
        return Choice("agent", f"{files} file(s), {size} bytes: the agent carries them")
    if not target.multiplexed:
        return Choice("agent", "no ssh master for rsync to share (ControlMaster is off)")
    if not _PLAIN.match(target.destination):
        return Choice("agent", f"rsync cannot name {target.destination} as HOST:PATH")
    if here is None:
        return Choice("agent", "rsync is not installed here")
    if there is None:
        return Choice("agent", "rsync is not installed on the server")
    return Choice("rsync", f"{files} file(s), {size} bytes")


def local_rsync() -> str | None:
    return shutil.which("rsync")


def rsh(target: ssh.Target) -> str:
    """rsync's ``-e``: tether's ssh, riding the master and never prompting (the master
    is the one place that authenticates; the listing just went through it). rsync
    splits it on spaces and honours quotes (rsync(1), --rsh), which shlex.join gives."""
    return shlex.join([*target.base_argv(), "-o", "ControlMaster=no", "-o", "BatchMode=yes", "-T"])


def argv(target: ssh.Target, *, there: str, source: str, dest: str) -> list[str]:
    """rsync from ``source`` to ``dest`` (one of them ``HOST:PATH``) of the names on
    stdin; ``there``: the server's rsync, which its shell runs (hence quoted)."""
    return [
        "rsync",
        "-e",
        rsh(target),
        f"--rsync-path={shlex.quote(there)}",
        "--files-from=-",
        "--from0",
        # --protect-args, named --secluded-args since rsync 3.3.0 (its NEWS); -s is both
        # names' short form: paths go over rsync's protocol, not through the remote shell.
        "-s",
        "--chmod=D700,F600",  # staged copies are private; the write sets the real mode
        "--",
        source,
        dest,
    ]


def remote(target: ssh.Target, path: str) -> str:
    return f"{target.destination}:{path}"


def names_input(names: Sequence[str]) -> str:
    return "".join(f"{n}\0" for n in names)


def copy(target: ssh.Target, *, there: str, source: str, dest: str, names: Sequence[str]) -> str:
    """Run rsync; "" when what arrived is worth checking, else why not."""
    try:
        res = proc.run(
            argv(target, there=there, source=source, dest=dest),
            input=names_input(names),
            timeout=TIMEOUT,
        )
    except TetherError as exc:  # rsync vanished, or took too long
        return exc.message
    if res.ok or res.returncode in PARTIAL:
        return ""
    detail = ssh.first_meaningful_line(res.stderr) or "no message"
    return f"rsync failed (exit {res.returncode}): {detail}"
