"""Jupyter environments from PyPI for the sandbox accounts, built with uv."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
from collections.abc import Sequence
from pathlib import Path

from jupyter_tether import paths
from jupyter_tether.errors import ExitCode, TetherError
from testing._run import is_root, must
from testing.accounts import find_uv, system_python

ROOT_UV_CACHE = Path("/var/tmp/jupyter-tether-uv-cache")  # noqa: S108 - root-only, persistent
ENV_MARKER = ".tether-sandbox-env"


def _env_is_good(path: Path, packages: Sequence[str]) -> bool:
    marker = path / ENV_MARKER
    try:
        recorded = marker.read_text().split()
    except OSError:
        return False
    return recorded == sorted(packages) and os.access(path / "bin" / "python", os.X_OK)


def make_jupyter_env(
    user: str,
    path: Path,
    *,
    packages: Sequence[str] = ("jupyterlab", "ipykernel"),
    uv_cache: Path | None = None,
) -> Path:
    """Build a venv with ``packages`` from PyPI at ``path``, owned by ``user``; return it.

    Built from the system python3 with uv. uv itself stays outside the environment and
    the user's home. Idempotent: an environment built before with the same packages is
    left alone. As root the build runs as root (copying files out of uv's cache rather
    than hard-linking them, so the chown afterwards cannot reach the cache) and is then
    handed to ``user``; the cache is ``/var/tmp/jupyter-tether-uv-cache`` then.
    """
    pw = pwd.getpwnam(user)
    if not is_root() and pw.pw_uid != os.getuid():
        raise TetherError(f"only root can build an environment for another user ({user})")
    path = Path(path)
    if _env_is_good(path, packages):
        return path
    _make_parents(path, pw)
    # Two test runs at once may both want the environment: build it once.
    with _locked(path.parent):
        return _build_env(path, pw, packages, uv_cache)


def _build_env(
    path: Path, pw: pwd.struct_passwd, packages: Sequence[str], uv_cache: Path | None
) -> Path:
    if _env_is_good(path, packages):
        return path  # built by whoever held the lock before us
    if path.exists():
        if not (path / "pyvenv.cfg").is_file():
            raise TetherError(
                f"{path} exists and is not a virtual environment; refusing to replace it",
                hint="remove it or choose another path",
            )
        shutil.rmtree(path)  # a half-built environment from an interrupted run

    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    if uv_cache is not None:
        env["UV_CACHE_DIR"] = str(uv_cache)
    elif is_root():
        env["UV_CACHE_DIR"] = str(ROOT_UV_CACHE)
    uv = find_uv()
    venv = [uv, "venv", "--quiet", "--python", system_python(), str(path)]
    # Copies, not hard links into uv's cache: the chown below must not reach the cache.
    install = [uv, "pip", "install", "--quiet", "--link-mode=copy", "--python"]
    try:
        must(
            venv,
            f"creating a virtual environment at {path}",
            env=env,
            timeout=120,
            code=ExitCode.PROVISION,
        )
        must(
            [*install, str(path / "bin" / "python"), *packages],
            f"installing {' '.join(packages)}",
            env=env,
            timeout=900,
            code=ExitCode.PROVISION,
        )
        if is_root() and pw.pw_uid != 0:
            _chown_tree(path, pw.pw_uid, pw.pw_gid)
        # The marker goes last: an environment without it is rebuilt on the next call.
        marker = path / ENV_MARKER
        marker.write_text(" ".join(sorted(packages)) + "\n")
        if is_root():
            os.chown(marker, pw.pw_uid, pw.pw_gid)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


def _locked(directory: Path, timeout: float = 1200) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive flock on ``directory`` itself (no lock file left behind)."""
    return paths.hold_lock(
        directory,
        timeout=timeout,
        busy=TetherError(f"{directory} stayed locked for {timeout:g} s by another build"),
    )


def _make_parents(path: Path, pw: pwd.struct_passwd) -> None:
    """Create the missing parents of ``path``, owned by the user when inside their home."""
    missing = [p for p in reversed(path.parents) if not p.exists()]
    for parent in missing:
        parent.mkdir()
        if is_root() and parent.is_relative_to(pw.pw_dir):
            os.chown(parent, pw.pw_uid, pw.pw_gid)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(Path(dirpath) / name, uid, gid, follow_symlinks=False)
