"""Where jupyter-tether keeps things on the workstation.

All local paths come from here so that tests (and careful users) can move them with
environment variables instead of touching the real home directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import platformdirs

from jupyter_tether.errors import ExitCode, TetherError

APP = "jupyter-tether"


def config_file() -> Path:
    """The profiles file: ``$JUPYTER_TETHER_CONFIG`` or the platform's config dir."""
    override = os.environ.get("JUPYTER_TETHER_CONFIG")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


def state_dir() -> Path:
    """Local state (known servers, supervisor records): ``$JUPYTER_TETHER_STATE_DIR``."""
    override = os.environ.get("JUPYTER_TETHER_STATE_DIR")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_state_dir(APP))


def cache_dir() -> Path:
    """Downloaded wheels and binaries: ``$JUPYTER_TETHER_CACHE_DIR``."""
    override = os.environ.get("JUPYTER_TETHER_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir(APP))


def runtime_dir() -> Path:
    """A private directory with a short path, for ssh control sockets.

    Unix socket paths are limited to about 107 bytes and ssh appends a random suffix
    while it creates a ControlPath, so this must stay short: ``$XDG_RUNTIME_DIR`` when
    there is one, else ``/tmp/jupyter-tether-UID``.
    """
    override = os.environ.get("JUPYTER_TETHER_RUNTIME_DIR")
    if override:
        return ensure_private_dir(Path(override).expanduser())
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return ensure_private_dir(Path(xdg) / APP)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return ensure_private_dir(Path(tempfile.gettempdir()) / f"{APP}-{uid}")


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` as a 0700 directory, or check that an existing one is ours and private.

    A directory somebody else created (or a symlink planted in a shared /tmp) is refused
    rather than followed.
    """
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise TetherError(
            f"{path} is not a directory (or is a symlink)",
            hint="remove it, or point JUPYTER_TETHER_RUNTIME_DIR somewhere private",
            code=ExitCode.ERROR,
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise TetherError(
            f"{path} belongs to another user (uid {st.st_uid})",
            hint="somebody may be squatting on it; set JUPYTER_TETHER_RUNTIME_DIR to a private dir",
        )
    if st.st_mode & 0o077:
        path.chmod(0o700)
    return path


# A full or read-only disk: the user can fix these, so they get a message, not a traceback.
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only (0600).

    The old file stays whole until the new one is complete on disk (written, flushed,
    fsynced, then renamed over it), so a full disk or a crash never leaves half a file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
            Path(tmp).replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        raise TetherError(
            f"cannot write {path}: {os.strerror(exc.errno or 0)}",
            hint=f"free some space on the file system that holds {path.parent} (see `df -h`), "
            "or point JUPYTER_TETHER_STATE_DIR elsewhere; the files there are unchanged",
            code=ExitCode.ERROR,
        ) from None


@contextlib.contextmanager
def hold_lock(path: Path, *, timeout: float, busy: TetherError) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` for the block; raise ``busy`` after ``timeout``.

    ``path`` is a lock file (created 0600 if missing), or a directory locked as itself.
    """
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    else:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise busy from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
