"""sshfs mounts of a server's folder over tether's own ssh master (README: Mount).

A mount is one copy of the server's files seen from here, not a second one: this module
builds sshfs's argv (its ssh rides the ControlMaster, so no password or 2FA prompt comes
again), checks what FUSE needs on the workstation, unmounts, and keeps a 0600 record per
profile of the mounts it made, which `tether down` unmounts.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import shutil
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

from jupyter_tether import paths, proc
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.ssh import Target

FUSE_DEVICE = Path("/dev/fuse")
MOUNTS_TABLE = Path("/proc/self/mounts")

# Listings and attributes are cached for dcache_timeout s (sshfs's default: 20): a file
# Jupyter saves on the server shows here within that time. reconnect: sshfs starts its ssh
# again after a drop (through the master when it is back; BatchMode, so never a hidden
# prompt). idmap=user: the server's uid for this account shows as yours. No allow_other:
# the mount is yours alone.
SSHFS_OPTIONS = (
    "reconnect",
    "ServerAliveInterval=15",
    "ServerAliveCountMax=3",
    "idmap=user",
    "dcache_timeout=5",
)


@dataclass(frozen=True)
class Mount:
    """One mount tether made: the local directory and what it shows."""

    dir: str  # absolute, on the workstation
    remote: str  # absolute, on the server
    ssh: str  # the ssh destination
    mounted: float
    ssh_config: str | None = None  # the ssh config file it was made with


def fusermount() -> str:
    """fusermount3 (FUSE 3), else fusermount (FUSE 2), or a plain-words error."""
    for name in ("fusermount3", "fusermount"):
        found = shutil.which(name)
        if found:
            return found
    raise TetherError(
        "fusermount3 (or fusermount) is not installed, so a FUSE mount cannot be made or undone",
        hint="install FUSE (on Debian/Ubuntu: apt install fuse3)",
        code=ExitCode.ERROR,
    )


def check_tools() -> str:
    """What mounting needs on this workstation: sshfs, the FUSE device and fusermount."""
    sshfs = shutil.which("sshfs")
    if sshfs is None:
        raise TetherError(
            "sshfs is not installed on this workstation",
            hint="install it (on Debian/Ubuntu: apt install sshfs; on macOS: macFUSE and "
            "sshfs), or use `tether sync` for a copy of the files here",
            code=ExitCode.ERROR,
        )
    if not FUSE_DEVICE.exists():
        raise TetherError(
            f"{FUSE_DEVICE} is missing, so FUSE file systems cannot be mounted here",
            hint="load the fuse module (`modprobe fuse`), or in a container pass "
            "--device /dev/fuse; otherwise use `tether sync`",
            code=ExitCode.ERROR,
        )
    fusermount()
    return sshfs


def _fuse_escape(option: str) -> str:
    r"""One ``-o`` value as libfuse's option parser reads it back: it splits at commas
    and takes ``\`` as an escape (fuse_opt.c)."""
    return option.replace("\\", "\\\\").replace(",", "\\,")


def ssh_options(target: Target) -> list[str]:
    """tether's ssh options for the ssh under sshfs, in pairs (``-F FILE``, ``-o K=V``):
    on tether's ControlPath, never a master itself, never prompting (the master did)."""
    argv = target.base_argv()[1:]
    if target.multiplexed:
        argv += ["-o", "ControlMaster=no"]
    return [*argv, "-o", "BatchMode=yes"]


def sshfs_argv(sshfs: str, target: Target, remote: str, local: Path) -> list[str]:
    """sshfs's argv: the server's absolute ``remote`` at ``local``, over ``target``.

    tether's ssh options go through sshfs's own ``-F`` and ``-o SSHOPT=VAL``, which it
    hands to its ssh one argument each, not through ``-o ssh_command=``: sshfs 3.7 splits
    that at spaces and keeps an escaping backslash, so a path with a space cannot pass.
    """
    options, host = ssh_options(target), target.destination
    if host.startswith("ssh://"):
        # sshfs takes [user@]host:dir only; the same user, host and port give ssh the same
        # %C, so the mount still rides the master.
        url = urllib.parse.urlsplit(host)
        user = f"{url.username}@" if url.username else ""
        hostname = f"[{url.hostname}]" if ":" in (url.hostname or "") else url.hostname
        host = f"{user}{hostname}"
        options += ["-p", str(url.port)] if url.port else []
    argv = [sshfs, f"{host}:{remote}", str(local)]
    for flag, value in zip(options[::2], options[1::2], strict=True):
        argv += [flag, _fuse_escape(value) if flag == "-o" else value]
    for option in SSHFS_OPTIONS:
        argv += ["-o", option]
    return argv


def remote_dir_expr(root_dir: str, path: str | None) -> str:
    """A shell word for the server's directory: ``path`` under ``root_dir`` unless
    absolute (or ``~``-based), ``~`` being the login's home."""
    where = root_dir if not path else path if path[:1] in ("/", "~") else f"{root_dir}/{path}"
    if where == "~":
        return '"$HOME"'
    if where.startswith("~/"):
        return '"$HOME"/' + shlex.quote(posixpath.normpath(where[2:]))
    if where.startswith("~"):
        raise TetherError(
            f"{where!r}: only ~ and ~/... name a home directory here",
            hint="give the directory as an absolute path",
            code=ExitCode.USAGE,
        )
    return shlex.quote(where)


def resolve_remote_script(expr: str) -> str:
    """A POSIX sh script that prints the directory's physical absolute path, or exits 3."""
    return f"cd -- {expr} 2>/dev/null || exit 3\npwd -P\n"


# --- the mount table ----------------------------------------------------------------------


def _unescape(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounted_at(local: Path) -> str | None:
    """The file system type mounted at ``local`` (``fuse.sshfs``...), or None.

    Read from the mount table rather than with os.path.ismount: a mount whose sshfs
    died answers stat() with ENOTCONN, which ismount() takes for "not a mount"."""
    where = os.path.realpath(local)
    try:
        table = MOUNTS_TABLE.read_text()
    except OSError:  # no /proc (macOS)
        return "unknown" if os.path.ismount(where) else None
    found = None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 3 and _unescape(fields[1]) == where:
            found = fields[2]  # the last one listed is the one on top
    return found


def check_mountpoint(local: Path) -> Path:
    """``local`` made absolute and created if missing; refused when not an empty
    directory that nothing is mounted at: a mount would hide what is there."""
    local = Path(os.path.abspath(local.expanduser()))
    if mounted_at(local):
        raise TetherError(
            f"something is already mounted at {local}",
            hint=f"unmount it first (`fusermount3 -u {shlex.quote(str(local))}`), or pick "
            "another directory",
            code=ExitCode.ERROR,
        )
    if not local.exists():
        local.mkdir(mode=0o700, parents=True)
    elif not local.is_dir():
        raise TetherError(
            f"{local} is not a directory", hint="give an empty directory", code=ExitCode.ERROR
        )
    elif any(local.iterdir()):
        raise TetherError(
            f"{local} is not empty: a mount there would hide its files",
            hint="give an empty or new directory",
            code=ExitCode.ERROR,
        )
    return local


def unmount(local: Path) -> None:
    """``fusermount3 -u`` (else ``fusermount -u``) the mount at ``local``."""
    res = proc.run([fusermount(), "-u", str(local)], timeout=30, stdin_devnull=True)
    if not res.ok and mounted_at(local):
        busy = "busy" in res.stderr.lower()
        raise TetherError(
            f"could not unmount {local}: {res.stderr.strip() or f'exit {res.returncode}'}",
            hint="a program still has files open there, or a shell is in it: close them, "
            "then try again"
            if busy
            else "try `fusermount3 -u DIR` by hand",
            code=ExitCode.ERROR,
        )


# --- records ----------------------------------------------------------------------------


def _record_path(name: str) -> Path:
    return paths.state_dir() / "mounts" / f"{name}.json"


def records(name: str) -> list[Mount]:
    """The mounts tether made for ``name`` that are still mounted."""
    try:
        data = json.loads(_record_path(name).read_text(encoding="utf-8"))
        found = [Mount(**m) for m in data]
    except (OSError, ValueError, TypeError):
        return []
    return [m for m in found if mounted_at(Path(m.dir)) == "fuse.sshfs"]


def destinations() -> set[str]:
    """The ssh destinations mounts go through (their master must stay)."""
    folder = paths.state_dir() / "mounts"
    if not folder.is_dir():
        return set()
    return {m.ssh for f in folder.glob("*.json") for m in records(f.stem)}


def _save(name: str, mounts: list[Mount]) -> None:
    if mounts:
        paths.write_private(_record_path(name), json.dumps([asdict(m) for m in mounts]))
    else:
        _record_path(name).unlink(missing_ok=True)


def remember(name: str, mount: Mount) -> None:
    _save(name, [m for m in records(name) if m.dir != mount.dir] + [mount])


def forget(name: str, local: Path) -> None:
    _save(name, [m for m in records(name) if m.dir != str(local)])


def new_record(local: Path, remote: str, target: Target) -> Mount:
    cfg = str(target.config_file) if target.config_file else None
    return Mount(str(local), remote, target.destination, time.time(), ssh_config=cfg)
