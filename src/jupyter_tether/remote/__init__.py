"""Remote-side code, shipped as real files, and the plumbing to run it over ssh.

``probe.sh`` (POSIX sh) learns about the server in one round trip; ``agent.py``
(stdlib-only Python) launches, checks, and stops servers; ``run.sh`` runs Jupyter in
the foreground under tmux/screen/setsid.  All three travel on ssh's stdin.
"""

from __future__ import annotations

import json
import shlex
from functools import cache
from importlib import resources
from typing import Any

from jupyter_tether import ssh
from jupyter_tether.errors import ExitCode, TetherError

MARK = "@@TETHER-JSON@@"
_EOF = "@@TETHER-EOF@@"
# Reads the agent's length, then its code, from stdin; the rest of stdin is the request.
_BOOT = (
    "import sys;n=int(sys.stdin.readline());"
    "exec(compile(sys.stdin.read(n),'tether-agent','exec'),{'__name__':'__tether_agent__'})"
)
STATE_EXPR = '"${XDG_STATE_HOME:-$HOME/.local/state}/jupyter-tether"'
DATA_EXPR = '"${XDG_DATA_HOME:-$HOME/.local/share}/jupyter-tether"'


@cache
def read(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def shell_path(path: str) -> str:
    """Quote a server path for sh, keeping a leading ``~/`` meaning the remote home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def probe_script() -> str:
    return f"TETHER_STATE={STATE_EXPR}\nTETHER_DATA={DATA_EXPR}\n{read('probe.sh')}"


def agent_script(python: str, request: dict[str, Any], *, program: str = "agent.py") -> str:
    """The sh text that runs ``program`` (a stdlib-only file in this package; the agent
    by default) under ``python`` with ``request`` on its stdin.

    A here-document, not the rest of ssh's stdin: bash (``sh`` on many distributions)
    reads ahead on pipes, so only a here-document reliably reaches the child.
    """
    code = read(program)
    payload = json.dumps(request)
    if _EOF in payload or _EOF in code:
        raise ValueError("request contains the here-document delimiter")
    missing = json.dumps(
        {
            "ok": False,
            "kind": "no_python",
            "message": f"{python} does not exist or is not executable on the server",
            "hint": "check the profile's `env` path: it should be a venv or conda prefix "
            "with Jupyter installed",
        }
    )
    return (
        f"if [ ! -x {shell_path(python)} ]; then\n"
        f"  printf '\\n%s %s\\n' {MARK} {shlex.quote(missing)}; exit 0\nfi\n"
        f"exec {shell_path(python)} -c {shlex.quote(_BOOT)} <<'{_EOF}'\n"
        f"{len(code)}\n{code}{payload}\n{_EOF}\n"
    )


def parse_answer(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK + " "):
            data = json.loads(line[len(MARK) + 1 :])
            return data if isinstance(data, dict) else None
    return None


def call_agent(
    target: ssh.Target,
    python: str,
    request: dict[str, Any],
    *,
    timeout: float = 180,
    program: str = "agent.py",
) -> dict[str, Any]:
    """Run one operation of ``program`` on the server and return its JSON answer.

    Raises a TetherError for ssh failures or a program that gave no answer.
    """
    res = ssh.run_script(target, agent_script(python, request, program=program), timeout=timeout)
    answer = parse_answer(res.stdout)
    if answer is None:
        detail = ssh.first_meaningful_line(res.stderr) or f"exit status {res.returncode}"
        raise TetherError(
            f"{target.destination}: the remote helper did not answer ({detail})",
            hint=f"is {python!r} a working Python >= 3.8 on the server? "
            "`tether doctor` checks the server",
            code=ExitCode.REMOTE_ENV,
            details=res.stderr.strip()[-2000:] or None,
        )
    return answer
