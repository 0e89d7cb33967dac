"""`tether up`: connect, probe, start (or reuse), forward, check, print the URL."""

from __future__ import annotations

import os
import webbrowser
from pathlib import Path
from typing import Any

from jupyter_tether import (
    batch,
    config,
    develop,
    forward,
    jupyter_api,
    launch,
    output,
    probe,
    provision,
    relay,
    ssh,
    state,
    supervisor,
)
from jupyter_tether.clients import Agent
from jupyter_tether.commands._common import release_master
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.provision import builder_calls, keep_outputs
from jupyter_tether.remote import protocol


def up(
    name: str,
    *,
    ssh_config: Path | None = None,
    port: int | None = None,
    browser: bool = True,
    as_json: bool = False,
    verbose: bool = False,
    autostart: bool = False,
    overrides: dict[str, Any] | None = None,
) -> int:
    profile = config.resolve(name, overrides=overrides)
    with state.lock(profile.name):
        return _up(
            profile,
            autostart=autostart,
            ssh_config=ssh_config,
            port=port,
            browser=browser,
            as_json=as_json,
            verbose=verbose,
        )


def _up(
    profile: config.Profile,
    *,
    ssh_config: Path | None,
    port: int | None,
    browser: bool,
    as_json: bool,
    verbose: bool,
    autostart: bool,
) -> int:
    if port is None:
        port = profile.port
    previous = state.load(profile.name)
    if port is not None and not (previous and previous.local_port == port):
        forward.check_port(port)  # before anything starts on the server
    progress = output.Progress(verbose=verbose, quiet=as_json)
    target = ssh.make_target(profile.ssh, config_file=ssh_config)

    with progress.phase("connect", profile.ssh):
        started_master = ssh.ensure_master(target)
    launched = False  # this command may have started a server that no record names yet
    job: batch.Job | None = None
    forward_target = target

    def undo() -> None:
        # Leave nothing behind that this command created: an interrupted or failed `up`
        # leaves the old state or the new one, never a server without a record.
        if previous is None:
            supervisor.stop(profile.name)  # started for the forward, before any record
        if launched and job is not None:
            _cancel_job(target, profile, found, job, python)
        elif launched:
            _take_down(target, profile.name, python)
        if forward_target is not target:
            ssh.exit_master(forward_target)
        # A master nobody uses goes too.
        if started_master:
            release_master(target)

    try:
        with progress.phase("probe"):
            found = probe.probe(target)
        if autostart:
            _refuse_autostart_on_clusters(profile, found)  # before anything is built or started
        if found.scheduler and not profile.scheduler:
            _say_cluster_once(profile, found, progress)
        if profile.keep_outputs and profile.env:
            _check_own_env(target, profile, found, progress)
        profile = provision.apply(target, profile, found, progress=progress)
        python = launch.agent_python(profile, found)
        if develop.wanted(profile):
            # Before Jupyter starts, so its first kernel imports the synced package.
            _develop(target, profile, found, python, progress)
        if profile.scheduler:
            started = batch.start(target, profile, found, python=python, progress=progress)
            job, forward_target, server = started.job, started.target, started.server
            launched = started.submitted
            local_port, server = _forward_and_check(
                forward_target,
                profile,
                found,
                server,
                python=python,
                port=port,
                progress=progress,
            )
        else:
            local_port, server, launched = _start_server(
                target, profile, found, previous, python=python, port=port, progress=progress
            )
    except BaseException:
        undo()
        raise
    rec = state.Record(
        name=profile.name,
        ssh=profile.ssh,
        ssh_config=str(ssh_config) if ssh_config else _env_ssh_config(),
        token=server["token"],
        local_port=local_port,
        remote=_remote_end(server),
        app=profile.app,
        pid=int(server["pid"]),
        hostname=str(server.get("hostname") or found.hostname),
        started=float(server.get("started") or 0),
        transport=server["transport"],
        python=python,
        rundir=server.get("rundir"),
        launcher=server.get("launcher"),
        job=job.as_dict() if job else None,
    )
    try:
        state.save(rec)  # a full disk stops here, before anything depends on the record
    except BaseException:
        undo()
        raise
    return _finish(
        rec,
        profile,
        found,
        target,
        server,
        python=python,
        autostart=autostart,
        browser=browser,
        as_json=as_json,
        progress=progress,
    )


def _start_server(
    target: ssh.Target,
    profile: config.Profile,
    found: probe.Probe,
    previous: state.Record | None,
    *,
    python: str,
    port: int | None,
    progress: output.Progress,
) -> tuple[int, protocol.UpAnswer, bool]:
    """Jupyter on the server itself; the local port, its answer, and whether it is new."""
    launched = False
    try:
        transport = "socket"
        if profile.transport == "tcp" or (
            profile.transport == "auto" and state.host_fact(profile.ssh, "streamlocal") is False
        ):
            transport = "tcp"
        with progress.phase("start", f"jupyter {profile.app} on {found.hostname}"):
            launched = previous is None
            server = launch.start(target, profile, found, python=python, transport=transport)
        launched = launched and not server.get("reused")
        if server.get("reused"):
            progress.say(f"  reusing the running server (pid {server['pid']})")
        elif server["transport"] == "tcp" and transport == "socket":
            progress.say("  this Jupyter is too old for a Unix socket: using TCP on 127.0.0.1")
        local_port, server = _forward_and_check(
            target, profile, found, server, python=python, port=port, progress=progress
        )
    except BaseException:
        if launched:
            _take_down(target, profile.name, python)
        raise
    return local_port, server, launched


def _finish(
    rec: state.Record,
    profile: config.Profile,
    found: probe.Probe,
    target: ssh.Target,
    server: protocol.UpAnswer,
    *,
    python: str,
    autostart: bool,
    browser: bool,
    as_json: bool,
    progress: output.Progress,
) -> int:
    """Record the server, hand it to the supervisor, and tell the user."""
    local_port = rec.local_port
    # From here on the supervisor owns the forward (it has listened on the port since
    # the forward step): it re-creates it after a network drop, and brings the server
    # back if it is gone.
    supervisor_pid = supervisor.start(profile.name)
    hook = _autostart(target, profile, found, python) if autostart else None
    if hook:
        progress.say(f"  autostart after reboot: {hook}")
    if as_json:
        output.emit_json(
            {
                "host": profile.ssh,
                "name": profile.name,
                "url": rec.url,
                "local_port": local_port,
                "pid": rec.pid,
                "state": "running",
                "reused": bool(server.get("reused")),
                "transport": rec.transport,
                "remote": rec.remote,
                "hostname": rec.hostname,
                "versions": server.get("versions", {}),
                "timings": progress.timings,
                "bytes_copied": progress.bytes_copied,
                "supervisor": supervisor_pid,
                "autostart": hook,
                "job": rec.job,
                "notes": progress.notes,
            }
        )
    else:
        print(rec.url)
    if browser:
        webbrowser.open(rec.url)
    return ExitCode.OK


def _develop(
    target: ssh.Target,
    profile: config.Profile,
    found: probe.Probe,
    python: str,
    progress: output.Progress,
) -> None:
    """Sync the develop folders and install them editable (README: Local packages)."""
    if profile.develop:
        with progress.phase("sync", "develop folders"):
            outcomes = develop.sync_all(Agent(target, python), profile)
        develop.say(outcomes, progress)
    answer = develop.install(target, profile, found, progress=progress)
    for line in answer.get("uv_lines", []):
        progress.say(f"  {line}")
    if answer.get("autoreload") != bool(profile.autoreload):
        progress.note(
            f"  note: {answer['env']}/etc/ipython/ipython_kernel_config.py is not tether's; "
            "autoreload there is as that file says"
        )


def _say_cluster_once(
    profile: config.Profile, found: probe.Probe, progress: output.Progress
) -> None:
    """A login node of a cluster, used as a plain server: say once how to use the nodes."""
    if state.host_fact(profile.ssh, "told_cluster"):
        return
    state.set_host_fact(profile.ssh, "told_cluster", True)
    progress.say(
        f"  note: {found.hostname} is a {found.scheduler} login node; to run on a compute "
        f'node, set scheduler = "{found.scheduler}" in [hosts.{profile.name}] or pass '
        "--scheduler (README: Clusters)"
    )


def _check_own_env(
    target: ssh.Target, profile: config.Profile, found: probe.Probe, progress: output.Progress
) -> None:
    """keep_outputs with the profile's own ``env``: tether installs nothing there, so say
    what it lacks, with the pip line (`tether doctor` checks the same)."""
    assert profile.env
    try:
        info = builder_calls.describe(target, found, profile.env)
    except TetherError as exc:
        progress.note(f"  keep_outputs: cannot look into {profile.env} ({exc.message})")
        return
    if not info["exists"]:
        return  # starting Jupyter from it fails with its own message
    found_set = keep_outputs.check(info.get("packages") or [])
    if not found_set.tested:
        progress.note(f"  warning: {keep_outputs.advice(profile.env, found_set)}")


def _cancel_job(
    target: ssh.Target, profile: config.Profile, found: probe.Probe, job: batch.Job, python: str
) -> None:
    """Best effort: cancel a job this command submitted, and forget its session."""
    try:
        batch.cancel(Agent(target, python), profile, found, job, forget=True)
    except (TetherError, OSError):
        pass


def _take_down(target: ssh.Target, name: str, python: str) -> None:
    """Best effort: stop a server this command started (the agent waits for its lock)."""
    try:
        Agent(target, python).down(name, timeout=90)
    except (TetherError, OSError):
        pass


def _refuse_autostart_on_clusters(profile: config.Profile, found: probe.Probe) -> None:
    if found.scheduler:
        raise TetherError(
            f"{profile.ssh} has a batch scheduler (sbatch): autostart is refused there",
            hint="on a cluster, long-running servers belong in batch jobs, not on login "
            "nodes (process reapers kill them, and a reboot should not resurrect them)",
            code=ExitCode.USAGE,
        )


def _autostart(target: ssh.Target, profile: config.Profile, found: probe.Probe, python: str) -> str:
    """Install the user-level restart hook on the server; say which one."""
    answer = Agent(target, python).autostart(profile.name, enable=True)
    return f"{answer['hook']} ({answer.get('detail', '')})"


def _remote_end(server: protocol.UpAnswer) -> str:
    if server.get("sock"):
        return str(server["sock"])
    return f"{server.get('address') or '127.0.0.1'}:{server['port']}"


def _env_ssh_config() -> str | None:
    return os.environ.get("JUPYTER_TETHER_SSH_CONFIG") or None


def _forward_and_check(
    target: ssh.Target,
    profile: config.Profile,
    found: probe.Probe,
    server: protocol.UpAnswer,
    *,
    python: str,
    port: int | None,
    progress: output.Progress,
) -> tuple[int, protocol.UpAnswer]:
    previous = state.load(profile.name)
    want = port if port is not None else (previous.local_port if previous else None)
    sock = relay.socket_path(profile.name)
    with progress.phase("forward"):
        local_port, started = forward.establish(
            target, profile.name, _remote_end(server), want=want, fixed=port is not None
        )
    with progress.phase("ready", f"http://127.0.0.1:{local_port}"):
        # The agent saw the server answer on the server; through a working forward that
        # takes one round trip, so a few seconds of failures mean the forward is refused.
        status, problem = jupyter_api.wait_status(local_port, server["token"], seconds=6)
    if status is not None:
        return local_port, server
    if server["transport"] == "socket" and profile.transport == "auto" and not profile.scheduler:
        state.set_host_fact(profile.ssh, "streamlocal", False)
        # The server answers on its socket (the agent checked) but not through the
        # forward: sshd forbids stream-local forwarding. Restart it on TCP 127.0.0.1.
        progress.say(
            "  the server does not allow forwarding to a Unix socket: "
            "restarting Jupyter on TCP 127.0.0.1"
        )
        ssh.cancel_forward(target, sock, _remote_end(server))
        Agent(target, python).down(profile.name)
        with progress.phase("start", "again, on TCP"):
            server = launch.start(target, profile, found, python=python, transport="tcp")
        with progress.phase("forward"):
            local_port, again = forward.establish(
                target, profile.name, _remote_end(server), want=local_port, fixed=port is not None
            )
            started = started or again
        with progress.phase("ready", f"http://127.0.0.1:{local_port}"):
            status, problem = jupyter_api.wait_status(local_port, server["token"], seconds=15)
        if status is not None:
            return local_port, server
    ssh.cancel_forward(target, sock, _remote_end(server))
    if started:
        supervisor.stop(profile.name)
    raise TetherError(
        f"the server runs on {found.hostname}, but 127.0.0.1:{local_port} does not reach it "
        f"({problem})",
        hint="the server's sshd may forbid port forwarding (AllowTcpForwarding / "
        "AllowStreamLocalForwarding); `tether logs` shows the server side",
        code=ExitCode.SERVER_START,
    )
