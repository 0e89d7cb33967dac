"""Accounts for the sandbox servers, and the tools their environments are built with."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import sys
from pathlib import Path

from jupyter_tether.errors import TetherError
from testing._run import must, require_root

# Where python3 is looked for to build a Jupyter environment: a default PATH, not the
# caller's, so a root shell's pyenv shims (under /root, unreadable to the test user)
# are never picked.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def ensure_user(name: str, *, shell: str = "/bin/bash") -> pwd.struct_passwd:
    """Make sure a normal (non-root, no sudo) account ``name`` with a home exists. Root only.

    The password field is set to ``*``: no password can match it, and unlike ``!`` (what
    useradd leaves) sshd without PAM does not treat it as a locked account.
    """
    require_root("creating accounts")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", name):
        raise TetherError(f"not a usable account name: {name!r}")
    try:
        existing = pwd.getpwnam(name)
    except KeyError:
        useradd = ["useradd", "--create-home", "--shell", shell, "--comment", "tether", name]
        must(useradd, f"creating account {name}", timeout=60)
    else:
        if existing.pw_uid == 0:
            raise TetherError(f"account {name} has uid 0; refusing to use it as a normal user")
        if not Path(existing.pw_dir).is_dir():
            home = Path(existing.pw_dir)
            home.mkdir(mode=0o750, parents=True)
            os.chown(home, existing.pw_uid, existing.pw_gid)
    must(["usermod", "--password", "*", name], f"unlocking account {name}", timeout=60)
    return pwd.getpwnam(name)


def system_python() -> str:
    """The system's python3 (never one under /root, which other users cannot run)."""
    candidates = ["/usr/bin/python3"]
    found = shutil.which("python3", path=SYSTEM_PATH)
    if found:
        candidates.append(found)
    for candidate in candidates:
        real = Path(candidate).resolve()
        if os.access(real, os.X_OK) and not real.is_relative_to("/root"):
            return candidate
    raise TetherError("no system python3 found", hint="apt install python3")


def find_uv() -> str:
    """``uv`` beside the running interpreter (installed as a package) or on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("uv")
    if found:
        return found
    raise TetherError("uv is not installed", hint="pip install uv")
