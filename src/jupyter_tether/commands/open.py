"""`tether open`: forward again (same local port when possible) and open the browser."""

from __future__ import annotations

import webbrowser
from pathlib import Path

from jupyter_tether import forward, jupyter_api, output, relay, ssh, state, supervisor
from jupyter_tether.clients import Agent
from jupyter_tether.commands._common import record_or_fail, target_for
from jupyter_tether.errors import ExitCode, TetherError


def open_(
    name: str,
    *,
    ssh_config: Path | None = None,
    browser: bool = True,
    as_json: bool = False,
    verbose: bool = False,
) -> int:
    with state.lock(name):
        return _open(name, ssh_config=ssh_config, browser=browser, as_json=as_json, verbose=verbose)


def _open(
    name: str, *, ssh_config: Path | None, browser: bool, as_json: bool, verbose: bool
) -> int:
    rec = record_or_fail(name)
    target = target_for(rec, ssh_config)
    progress = output.Progress(verbose=verbose, quiet=as_json)
    with progress.phase("connect", rec.ssh):
        ssh.ensure_master(target)
    with progress.phase("forward"):
        port, started = forward.establish(
            target, name, rec.remote, want=rec.local_port, fixed=False
        )
    with progress.phase("ready", f"http://127.0.0.1:{port}"):
        status, problem = jupyter_api.wait_status(port, rec.token, seconds=10)
    if status is None:
        ssh.cancel_forward(target, relay.socket_path(name), rec.remote)
        if started:
            supervisor.stop(name)
        raise TetherError(
            f"{name}: the server on {rec.hostname} does not answer ({problem})",
            hint=f"{_why_not(target, rec)}; `tether up {name}` starts it again",
            code=ExitCode.SERVER_START,
        )
    if port != rec.local_port:
        progress.say(f"  port {rec.local_port} is taken now; using {port}")
        rec = state.Record(**{**rec.__dict__, "local_port": port})
        state.save(rec)
    supervisor.start(name)
    if as_json:
        output.emit_json({"name": name, "host": rec.ssh, "url": rec.url, "local_port": port})
    else:
        print(rec.url)
    if browser:
        webbrowser.open(rec.url)
    return ExitCode.OK


def _why_not(target: ssh.Target, rec: state.Record) -> str:
    """The server's own word on why it does not answer, as a hint (best effort)."""
    try:
        recorded, answer = Agent(target, rec.python).health(rec.name, timeout=30)
    except TetherError:
        return "it may have stopped"
    if recorded is not None:
        health = recorded["health"]
        return f"it is {health['state']}" + (
            f" ({health['detail']})" if health.get("detail") else ""
        )
    marker = (answer.get("stopped") or {}).get(rec.name)
    return f"it was {output.stopped_by(marker)}" if marker else "it is not recorded there"
