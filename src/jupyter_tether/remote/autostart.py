"""The agent's ``autostart``: a user-level hook that revives a server after a reboot.

A systemd --user unit when lingering allows it, else an ``@reboot`` crontab entry; both
run the agent (written as one file, ``agent.py`` in the data root) as
``python agent.py revive NAME``.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import sys
from typing import List, Optional, Tuple

from . import core
from .core import Json, Paths, RemoteError
from .launching import not_recorded

CRON_TAG = "# jupyter-tether:"


def _run_quiet(argv: List[str], stdin: Optional[str] = None) -> Tuple[int, str]:
    try:
        cp = subprocess.run(
            argv,
            input=(stdin or "").encode(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return cp.returncode, cp.stdout.decode(errors="replace")


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def systemd_user_ok() -> Tuple[bool, str]:
    """A user manager runs, and lingering keeps it alive without a login (or we may enable it)."""
    if not shutil.which("systemctl"):
        return False, "no systemctl"
    rc, out = _run_quiet(["systemctl", "--user", "show-environment"])
    if rc != 0:
        return False, "no systemd user manager (%s)" % out.strip().splitlines()[-1:]
    if os.path.exists("/var/lib/systemd/linger/" + _user()):
        return True, "lingering is enabled"
    if shutil.which("loginctl"):
        rc, out = _run_quiet(["loginctl", "enable-linger", _user()])
        if rc == 0:
            return True, "lingering enabled now"
    return False, "lingering is off and cannot be enabled by this user"


def _crontab_lines() -> List[str]:
    rc, out = _run_quiet(["crontab", "-l"])
    return out.splitlines() if rc == 0 else []


def unit_text(name: str, command: List[str]) -> str:
    return (
        "[Unit]\nDescription=jupyter-tether server %s\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=%s\n\n"
        "[Install]\nWantedBy=default.target\n" % (name, " ".join(command))
    )


def _remove_hooks(unit: str, unit_name: str, tag: str) -> List[str]:
    removed = []
    if os.path.exists(unit):
        _run_quiet(["systemctl", "--user", "disable", unit_name])
        core.remove_quietly(unit)
        removed.append("systemd")
    if shutil.which("crontab"):
        lines = _crontab_lines()
        kept = [line for line in lines if not line.rstrip().endswith(tag)]
        if kept != lines:
            _run_quiet(["crontab", "-"], "".join(line + "\n" for line in kept))
            removed.append("cron")
    return removed


def op_autostart(req: Json) -> Json:
    """Install (or remove, with enable=false) the hook for one server."""
    p = Paths(req["name"])
    agent = os.path.join(core.private_tree(core.data_root()), "agent.py")
    unit_name = "jupyter-tether-%s.service" % p.name
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    unit_dir = os.path.join(config, "systemd", "user")
    unit = os.path.join(unit_dir, unit_name)
    tag = CRON_TAG + p.name
    removed = _remove_hooks(unit, unit_name, tag)
    if not req.get("enable"):
        return {"hook": None, "removed": removed}
    if core.read_json(p.request) is None:
        raise not_recorded(p, "start it with `tether up` first")
    core.write_private(agent, req["agent_code"])
    command = [sys.executable, agent, "revive", p.name]
    ok, why = systemd_user_ok()
    if ok:
        os.makedirs(unit_dir, 0o700, exist_ok=True)
        core.write_private(unit, unit_text(p.name, command))
        _run_quiet(["systemctl", "--user", "daemon-reload"])
        rc, out = _run_quiet(["systemctl", "--user", "enable", unit_name])
        if rc == 0:
            return {"hook": "systemd", "detail": "%s (%s)" % (unit, why), "command": command}
        core.remove_quietly(unit)
        why = "systemctl --user enable failed: " + out.strip()
    if shutil.which("crontab"):
        line = "@reboot %s >/dev/null 2>&1 %s" % (" ".join(shlex.quote(c) for c in command), tag)
        rc, out = _run_quiet(["crontab", "-"], "".join(x + "\n" for x in [*_crontab_lines(), line]))
        if rc == 0:
            return {
                "hook": "cron",
                "detail": "@reboot entry in your crontab (%s)" % why,
                "command": command,
            }
        why += "; crontab refused: " + out.strip()
    raise RemoteError(
        "no_autostart",
        "autostart is not available on this server (%s; no usable crontab)" % why,
        "ask the administrators to enable lingering (loginctl enable-linger) or cron for you",
    )
