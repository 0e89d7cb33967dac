"""Running commands as a sandbox account."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"


def current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def home_of(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


def as_user(
    user: str,
    argv: Sequence[str],
    *,
    timeout: float = 120,
    input: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as ``user`` (via runuser when that is another account), in their home
    (or ``cwd``), with a clean environment, and return what it did. Another account
    needs root; under pytest the test is skipped without it."""
    env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "HOME": str(home_of(user)), "USER": user}
    if user != current_user():
        if os.geteuid() != 0:
            import pytest

            pytest.skip(f"running commands as {user} needs root")
        runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
        assert runuser is not None, "runuser (util-linux) is missing"
        argv = [runuser, "-u", user, "--", *argv]
    return subprocess.run(
        list(argv),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd or home_of(user),
        check=False,
    )
