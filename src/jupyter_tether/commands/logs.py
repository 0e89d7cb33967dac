"""`tether logs`: the server's log (or follow it with -f)."""

from __future__ import annotations

import shlex
from pathlib import Path

from jupyter_tether import proc, remote, ssh, state, supervisor
from jupyter_tether.commands._common import target_for
from jupyter_tether.config import check_name, resolve
from jupyter_tether.errors import ExitCode, TetherError

_MISSING = 9


def logs(
    name: str,
    *,
    follow: bool = False,
    lines: int = 50,
    ssh_config: Path | None = None,
    tunnel: bool = False,
) -> int:
    check_name(name)
    if tunnel:
        return _tunnel_log(name, lines=lines)
    rec = state.load(name)
    target = (
        target_for(rec, ssh_config)
        if rec
        else ssh.make_target(resolve(name).ssh, config_file=ssh_config)
    )
    ssh.ensure_master(target)
    log = f"{remote.STATE_EXPR}/logs/{shlex.quote(name + '.log')}"
    if rec is not None and rec.job:  # a batch job: its output, in the session directory
        log = f"{remote.STATE_EXPR}/jobs/{shlex.quote(name)}/output.log"
    script = (
        f"[ -r {log} ] || exit {_MISSING}\n"
        f"exec tail -n {int(lines)} {'-F' if follow else ''} {log}\n"
    )
    if follow:
        # Stream until Ctrl-C: ssh writes straight to the terminal, nothing is captured.
        res = proc.run([*target.command_argv(), "sh", "-s"], input=script, capture=False)
    else:
        res = ssh.run_script(target, script)
        print(res.stdout, end="")
    if res.returncode == _MISSING:
        raise TetherError(
            f"there is no log for {name!r} on {target.destination}",
            hint=f"the server has never been started there; `tether up {name}`",
            code=ExitCode.NOT_FOUND,
        )
    return ExitCode.OK if res.returncode in (0, 130, 143) else ExitCode.ERROR


def _tunnel_log(name: str, *, lines: int) -> int:
    """The supervisor's log: connects, drops, reconnects, revivals (on this workstation)."""
    try:
        text = supervisor.log_path(name).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise TetherError(
            f"no tunnel log for {name!r} on this workstation",
            hint=f"the supervisor starts with `tether up {name}` or `tether open {name}`",
            code=ExitCode.NOT_FOUND,
        ) from None
    print("\n".join(text.splitlines()[-lines:]))
    return ExitCode.OK
