"""`tether attach`: the server's tmux (or screen) session, over `ssh -t`."""

from __future__ import annotations

import shlex
from pathlib import Path

from jupyter_tether import proc, ssh
from jupyter_tether.commands._common import record_or_fail, target_for
from jupyter_tether.errors import ExitCode, TetherError


def attach(name: str, *, ssh_config: Path | None = None) -> int:
    rec = record_or_fail(name)
    target = target_for(rec, ssh_config)
    launcher = rec.launcher
    rundir = rec.rundir
    if launcher == "tmux" and rundir:
        cmd = f"exec tmux -S {shlex.quote(str(rundir) + '/tmux.sock')} attach"
    elif launcher == "screen":
        cmd = f"exec screen -r {shlex.quote('tether-' + name)}"
    else:
        raise TetherError(
            f"{name} was started without tmux or screen (with setsid), so there is "
            "nothing to attach to",
            hint=f"`tether logs -f {name}` follows its output",
            code=ExitCode.NOT_FOUND,
        )
    ssh.ensure_master(target)
    # A terminal session: the login shell parses this one line, so it stays simple.
    res = proc.run([*target.command_argv(tty=True), cmd], capture=False)
    return res.returncode
