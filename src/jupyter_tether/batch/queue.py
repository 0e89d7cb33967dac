"""Submitting a job, waiting for it while it is queued, cancelling it: through the
agent (``clients.Agent.job_*``), with the scheduler's commands from ``schedulers/``."""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time

from jupyter_tether import launch, output, remote, ssh
from jupyter_tether.batch.job import Job, backend, client_key, scheduler, spec_of
from jupyter_tether.clients import Agent
from jupyter_tether.config import Profile
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.probe import Probe
from jupyter_tether.remote import protocol
from jupyter_tether.schedulers import JobStatus, Partition
from jupyter_tether.schedulers.slurm import hopeless, hopeless_error

QUEUE_WAIT = 12 * 3600.0  # the longest `up` waits for a pending job before giving up
POLL = (0.25, 2.0)  # the first and the longest pause between two looks at a queued job
POLL_RUNNING = 0.1  # once it runs, Jupyter is seconds away: look often (one round trip)
OUTPUT_LINES = 30  # of the job's output, shown when it failed


# --- asking the scheduler -------------------------------------------------------------


def look(
    agent: Agent, profile: Profile, found: Probe, job: Job, *, output_lines: int = 0
) -> tuple[JobStatus, protocol.JobStatusAnswer]:
    """The job's state (the scheduler's answer, parsed) and its session's files."""
    job = dataclasses.replace(job, scheduler=profile.scheduler or job.scheduler)
    return look_at(agent, profile.name, job, found.login_path, output_lines=output_lines)


def look_at(
    agent: Agent, name: str, job: Job, path: str | None, *, output_lines: int = 0
) -> tuple[JobStatus, protocol.JobStatusAnswer]:
    sched = scheduler(job.scheduler)
    answer = agent.job_status(
        name,
        status_argv=sched.status_argv(job.id, job.cluster),
        path=path,
        output_lines=output_lines,
    )
    # What an earlier job of the same name wrote as it ended is not about this one.
    ended, ready = answer.get("ended"), answer.get("ready")
    if ended and str(ended.get("job", job.id)) != job.id:
        answer["ended"] = None
    if ready and str(ready.get("job")) != job.id:
        answer["ready"] = None
    ran = answer.get("squeue") or {"rc": 1, "stdout": "", "stderr": "no answer"}
    return sched.parse_status(ran["rc"], ran["stdout"], ran["stderr"]), answer


def recorded_job(answer: protocol.JobStatusAnswer) -> Job | None:
    """The job the session directory on the server records, if any."""
    record = answer.get("job")
    if not record or not record.get("stdout"):
        return None
    job_id, _, cluster = str(record["stdout"]).strip().partition(";")
    return Job(id=job_id, cluster=cluster or record.get("cluster"), session=answer["session"])


def submit(
    agent: Agent,
    profile: Profile,
    found: Probe,
    *,
    progress: output.Progress,
    transport: str = "socket",
) -> tuple[Job, str, str | None]:
    """Submit the job; returns it, its token and the bridge's host key."""
    sched = backend(profile)
    spec = spec_of(profile)
    token = launch.new_token()
    request = {
        "name": profile.name,
        "token": token,
        "app": profile.app,
        "env": profile.env,
        "root_dir": profile.root_dir,
        "modules": list(profile.modules),
        "module_init": found.module_init,
        "env_vars": dict(profile.env_vars),
        "path": found.login_path,
        "startup_timeout": profile.startup_timeout,
        "submit_argv": sched.submit_argv(spec),
        "script": sched.render(spec, remote.read("job.sh")),
        "bridge_client_key": client_key(profile.name),
        "cluster": spec.cluster,
        "transport": transport,
        "snapshots": launch.snapshot_settings(profile),
    }
    answer = agent.job_submit(request)
    job_id, cluster = sched.parse_submit(answer["rc"], answer["stdout"], answer["stderr"])
    progress.say(f"  submitted job {job_id}" + (f" on cluster {cluster}" if cluster else ""))
    job = Job(id=job_id, cluster=cluster or spec.cluster, session=answer["session"])
    return job, token, answer.get("host_key")


def cancel(agent: Agent, profile: Profile, found: Probe, job: Job, *, forget: bool) -> None:
    sched = backend(profile)
    agent.job_cancel(
        profile.name,
        cancel_argv=sched.cancel_argv(job.id, job.cluster),
        path=found.login_path,
        forget=forget,
    )


def line(status: JobStatus) -> str:
    text: str = status.state
    if status.reason and status.reason != "None":
        text += f" ({status.reason})"
    if status.state == "pending" and status.expected_start:
        text += f", expected to start {status.expected_start}"
    return text


def failed(job: Job, status: JobStatus, answer: protocol.JobStatusAnswer) -> TetherError:
    ended = answer.get("ended")
    how = ended["how"] if ended else (f"it is {status.state}" if status.state != "done" else "")
    out = (answer.get("output") or "").strip()
    return TetherError(
        f"job {job.id} ended before Jupyter answered" + (f": {how}" if how else ""),
        details=f"last lines of the job's output:\n{out}" if out else None,
        hint="`tether logs NAME` shows the job's output; check `modules` and the environment",
        code=ExitCode.SERVER_START,
    )


def wait_ready(
    agent: Agent,
    profile: Profile,
    found: Probe,
    job: Job,
    *,
    progress: output.Progress,
) -> tuple[protocol.Ready, JobStatus]:
    """Poll until the job has written its ready record; raise when it never will."""
    start = time.monotonic()
    running_since: float | None = None
    pause = POLL[0]
    shown = ""
    live = progress.live
    try:
        while True:
            status, answer = look(agent, profile, found, job)
            ready = answer.get("ready")
            if ready and str(ready.get("job")) == job.id and status.state == "running":
                return ready, status
            if status.state == "done" or (status.state == "running" and answer.get("ended")):
                _, answer = look(agent, profile, found, job, output_lines=OUTPUT_LINES)
                raise failed(job, status, answer)
            if hopeless(status):
                raise hopeless_error(status, partitions(profile, found, agent.target, job))
            if status.state == "running" and running_since is None:
                running_since = time.monotonic()
            now = time.monotonic()
            if running_since is not None and now - running_since > profile.startup_timeout:
                _, answer = look(agent, profile, found, job, output_lines=OUTPUT_LINES)
                err = failed(job, status, answer)
                err.message = (
                    f"job {job.id} runs on {status.node}, but Jupyter did not start within "
                    f"{profile.startup_timeout:g} s"
                )
                raise err
            if now - start > QUEUE_WAIT:
                raise TetherError(
                    f"job {job.id} is still {line(status)} after {QUEUE_WAIT / 3600:g} hours",
                    hint="try another partition or a shorter --time",
                    code=ExitCode.SCHEDULER,
                )
            text = f"  job {job.id}: {line(status)}"
            if live:
                sys.stderr.write("\r" + text + "\x1b[K")
                sys.stderr.flush()
            elif text != shown:
                progress.say(text)
            shown = text
            if status.state == "running":
                time.sleep(POLL_RUNNING)
            else:
                time.sleep(pause)
                pause = min(pause * 1.5, POLL[1])
    except BaseException as exc:
        if live and shown:
            sys.stderr.write("\r\x1b[K")
        if isinstance(exc, KeyboardInterrupt | TetherError):
            # Nothing of a job that will not be used may stay in the queue.
            try:
                cancel(agent, profile, found, job, forget=True)
            except TetherError:
                pass
            else:
                if isinstance(exc, KeyboardInterrupt):
                    progress.note(f"cancelled job {job.id} ({line(status)})")
        raise


def partitions(profile: Profile, found: Probe, target: ssh.Target, job: Job) -> list[Partition]:
    """sinfo's partitions and their limits, for an error that says what would work."""
    sched = backend(profile)
    argv = sched.partitions_argv(job.cluster)
    script = f"PATH={shlex.quote(found.login_path)}; export PATH; {shlex.join(argv)}\n"
    res = ssh.run_script(target, script, timeout=60)
    return sched.parse_partitions(res.stdout) if res.ok else []


# How Slurm's job output says a job was ended (slurmstepd writes these lines).
_ENDINGS = (
    ("DUE TO TIME LIMIT", "the time limit"),
    ("DUE TO PREEMPTION", "preemption"),
    ("DUE TO NODE FAILURE", "a node failure"),
    ("CANCELLED AT", "scancel"),
)


def ending(answer: protocol.JobStatusAnswer) -> str | None:
    """How the job ended, from the last lines of its output (``output_lines``)."""
    out = answer.get("output") or ""
    for needle, how in _ENDINGS:
        if needle in out:
            return how
    return None
