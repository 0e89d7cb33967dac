"""A server run as a batch job on a compute node (README: Clusters).

``up`` provisions on the login node as everywhere, then, instead of the agent's ``up``:

1. :func:`submit` sends ``remote/job.sh`` to the scheduler through the agent (the
   script on stdin, the token in a 0600 file of the job's session directory);
2. :func:`wait_ready` polls the scheduler and the session directory, with one live line
   for the state and the pending reason, until the job has written ``ready.json``; a
   reason that can never clear is an error at once, Ctrl-C cancels the job;
3. :func:`bridge` reaches the node with no TCP port open to anybody: an inner ssh
   master whose ProxyCommand runs, on the login node, ``srun --overlap`` of a per-job
   ``sshd -i`` with a host key made for this job and pinned here. The forward to the
   node's Unix socket goes through that master.

The scheduler's commands and their parsing live in ``schedulers/``; this module only
runs them through the agent (``clients.Agent.job_*``) and keeps the workstation's
files for the job: the bridge's client key, ssh config and known_hosts.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from jupyter_tether import output, ssh, state
from jupyter_tether.batch.job import Job, forget, scheduler
from jupyter_tether.batch.nodes import reach, via
from jupyter_tether.batch.queue import (
    OUTPUT_LINES,
    cancel,
    ending,
    line,
    look,
    look_at,
    recorded_job,
    submit,
    wait_ready,
)
from jupyter_tether.clients import Agent
from jupyter_tether.config import Profile
from jupyter_tether.errors import TetherError
from jupyter_tether.probe import Probe
from jupyter_tether.remote import protocol

__all__ = [
    "OUTPUT_LINES",
    "Job",
    "Started",
    "cancel",
    "ending",
    "forget",
    "look",
    "look_at",
    "scheduler",
    "start",
    "via",
]


@dataclass
class Started:
    server: protocol.UpAnswer  # what `up` records and forwards to, as for one server
    target: ssh.Target  # where the forward goes through: the bridge into the job
    job: Job
    submitted: bool  # a new job (False: one already running was reused)


def start(
    login: ssh.Target,
    profile: Profile,
    found: Probe,
    *,
    python: str,
    progress: output.Progress,
) -> Started:
    """Reuse the job the session records when it is queued or running; else submit one.
    Then wait for it and reach its node."""
    agent = Agent(login, python)
    job: Job | None = None
    token: str | None = None
    host_key: str | None = None
    old = recorded_job(agent.job_status(profile.name, status_argv=None, path=None))
    if old is not None:
        status, answer = look(agent, profile, found, old)
        if status.state in ("pending", "running", "unknown") and answer.get("token"):
            job, token, host_key = old, answer.get("token"), answer.get("host_key")
            progress.say(f"  job {old.id} is {line(status)}: using it")
        else:
            ended = answer.get("ended")
            how = ended["how"] if ended else status.state
            progress.note(f"  the last job ({old.id}) has ended ({how}): submitting a new one")
    submitted = job is None
    if job is None:
        with progress.phase("submit", f"{profile.scheduler} job on {found.hostname}"):
            transport = (
                "tcp" if state.host_fact(profile.ssh, "job_transport") == "tcp" else "socket"
            )
            job, token, host_key = submit(
                agent, profile, found, progress=progress, transport=transport
            )
    assert token is not None
    with progress.phase("queue", f"job {job.id}"):
        ready, status = wait_ready(agent, profile, found, job, progress=progress)
    node = str(ready.get("node") or status.node or "")
    try:
        with progress.phase("bridge", f"into job {job.id} on {node}"):
            target, method = reach(login, profile, found, job, ready, host_key, progress=progress)
    except TetherError:
        if not submitted:
            raise  # a job somebody is using is never cancelled to try another way
        cancel(agent, profile, found, job, forget=True)
        state.set_host_fact(profile.ssh, "job_transport", "tcp")
        progress.say("  submitting the job again, with Jupyter on TCP")
        with progress.phase("submit", f"{profile.scheduler} job on {found.hostname}, TCP"):
            job, token, host_key = submit(agent, profile, found, progress=progress, transport="tcp")
        with progress.phase("queue", f"job {job.id}"):
            ready, status = wait_ready(agent, profile, found, job, progress=progress)
        node = str(ready.get("node") or status.node or "")
        target, method = reach(login, profile, found, job, ready, host_key, progress=progress)
    job = dataclasses.replace(job, node=node, method=method, path=found.login_path)
    if method == "tcp":
        progress.note(
            f"  warning: Jupyter listens on {ready.get('address')}:{ready.get('port')} on {node}: "
            "other users of the cluster can reach that port, which only the token protects"
        )
    server: protocol.UpAnswer = {
        "name": profile.name,
        "pid": int(ready.get("pid") or 0),
        "sock": str(ready.get("sock")) if method != "tcp" else None,
        "port": ready.get("port") if method == "tcp" else None,
        "transport": "tcp" if method == "tcp" else "socket",
        "app": profile.app,
        "versions": {},
        "jupyter": "",
        "python": python,
        "root_dir": profile.root_dir,
        "rundir": str(ready.get("rundir") or ""),
        "launcher": profile.scheduler or "",
        "log": f"{job.session}/output.log",
        "path": found.login_path,
        "hostname": node,
        "started": float(ready.get("started") or time.time()),
        "reused": not submitted,
        "token": token,
    }
    if method == "tcp":
        server["address"] = str(ready.get("address"))
    return Started(server=server, target=target, job=job, submitted=submitted)
