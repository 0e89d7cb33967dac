"""`tether down`: stop the server, remove its socket and state, drop the forward."""

from __future__ import annotations

from pathlib import Path

from jupyter_tether import batch, output, probe, relay, ssh, state, supervisor
from jupyter_tether.clients import Agent
from jupyter_tether.commands import mount
from jupyter_tether.commands._common import release_master, target_for, workstation
from jupyter_tether.config import check_name, resolve
from jupyter_tether.errors import ExitCode, TetherError


def down(
    name: str, *, ssh_config: Path | None = None, verbose: bool = False, purge: bool = False
) -> int:
    check_name(name)
    with state.lock(name):
        # The supervisor goes first, or it would bring the server straight back.
        supervisor.stop(name)
        # Before the master goes: the mounts ride it (README: Mount).
        mount.unmount_all(name)
        return _down(name, ssh_config=ssh_config, verbose=verbose, purge=purge)


def _down(name: str, *, ssh_config: Path | None, verbose: bool, purge: bool) -> int:
    progress = output.Progress(verbose=verbose)
    rec = state.load(name)
    if rec is not None:
        target = target_for(rec, ssh_config)
        python = rec.python
    else:
        # Not started from here: find it on the server the profile points at.
        target = ssh.make_target(resolve(name).ssh, config_file=ssh_config)
        python = ""
    with progress.phase("connect", target.destination):
        ssh.ensure_master(target)
    if rec is not None and rec.job:
        return _down_job(rec, target, progress)
    if not python:
        found = probe.probe(target)
        mine = [s for s in found.servers if s.get("name") == name]
        if not mine:
            raise TetherError(
                f"no server called {name!r} runs on {target.destination}",
                hint="`tether ls` lists the servers this workstation knows",
                code=ExitCode.NOT_FOUND,
            )
        python = str(mine[0].get("python") or "python3")
    with progress.phase("stop", name):
        answer = Agent(target, python).down(name, by=workstation())
    if purge:
        hooks = Agent(target, python).autostart(name, enable=False)
        removed = ", ".join(hooks.get("removed") or []) or "none was installed"
        progress.say(f"removed the autostart hook ({removed})")
    if rec is not None:
        ssh.cancel_forward(target, relay.socket_path(name), rec.remote)
        state.remove(name)
    release_master(target)
    how = answer.get("how")
    progress.say(f"stopped {name}" + (f" ({how})" if how and answer.get("stopped") else ""))
    return ExitCode.OK


def _down_job(rec: state.Record, target: ssh.Target, progress: output.Progress) -> int:
    """Cancel the batch job, remove its session on both sides, drop the bridge."""
    assert rec.job is not None
    job = batch.Job.from_dict(rec.job)
    way = batch.via(rec.name, job, target)
    ssh.cancel_forward(way, relay.socket_path(rec.name), rec.remote)
    if way is not target:
        ssh.exit_master(way)
    with progress.phase("cancel", f"job {job.id}"):
        Agent(target, rec.python).job_cancel(
            rec.name,
            cancel_argv=batch.scheduler(job.scheduler).cancel_argv(job.id, job.cluster),
            path=job.path,
            forget=True,
        )
    batch.forget(rec.name)
    state.remove(rec.name)
    release_master(target)
    progress.say(f"stopped {rec.name} (cancelled job {job.id})")
    return ExitCode.OK
