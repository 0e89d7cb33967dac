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
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from jupyter_tether import launch, output, paths, remote, ssh, state
from jupyter_tether.clients import Agent
from jupyter_tether.config import Profile
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.probe import Probe
from jupyter_tether.remote import protocol
from jupyter_tether.schedulers import JobSpec, JobStatus, Partition
from jupyter_tether.schedulers.slurm import Slurm, hopeless, hopeless_error

QUEUE_WAIT = 12 * 3600.0  # the longest `up` waits for a pending job before giving up
POLL = (0.25, 2.0)  # the first and the longest pause between two looks at the job
OUTPUT_LINES = 30  # of the job's output, shown when it failed


@dataclass(frozen=True)
class Job:
    """A submitted job: what the workstation records of it (``state.Record.job``)."""

    id: str
    cluster: str | None
    scheduler: str = "slurm"
    node: str | None = None
    session: str | None = None
    method: str | None = None  # how the workstation reaches the node: bridge
    path: str | None = None  # the login node's PATH, where the scheduler's commands are

    def as_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, str | None]) -> Job:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})  # type: ignore[arg-type]


def backend(profile: Profile) -> Slurm:
    return scheduler(profile.scheduler or "")


def scheduler(name: str) -> Slurm:
    if name != "slurm":
        raise TetherError(f"unknown scheduler {name!r}", code=ExitCode.CONFIG)
    return Slurm()


def spec_of(profile: Profile) -> JobSpec:
    return profile.job or JobSpec(name=f"tether-{profile.name}")


# --- the workstation's files for a job --------------------------------------------------


def job_dir(name: str) -> Path:
    paths.ensure_private_dir(paths.state_dir() / "jobs")
    return paths.ensure_private_dir(paths.state_dir() / "jobs" / name)


def forget(name: str) -> None:
    """Remove the workstation's files for the job of ``name`` (the bridge key too)."""
    shutil.rmtree(paths.state_dir() / "jobs" / name, ignore_errors=True)


def client_key(name: str) -> str:
    """The public half of the key the bridge's sshd lets in (made once per server)."""
    key = job_dir(name) / "bridge_key"
    if not key.exists():
        done = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"tether-{name}", "-f", key],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise TetherError(
                f"ssh-keygen could not make the bridge key: {done.stderr.strip()}",
                code=ExitCode.ERROR,
            )
    return Path(f"{key}.pub").read_text().strip()


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


def _line(status: JobStatus) -> str:
    text: str = status.state
    if status.reason and status.reason != "None":
        text += f" ({status.reason})"
    if status.state == "pending" and status.expected_start:
        text += f", expected to start {status.expected_start}"
    return text


def _failed(job: Job, status: JobStatus, answer: protocol.JobStatusAnswer) -> TetherError:
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
                raise _failed(job, status, answer)
            if hopeless(status):
                raise hopeless_error(status, partitions(profile, found, agent.target, job))
            if status.state == "running" and running_since is None:
                running_since = time.monotonic()
            now = time.monotonic()
            if running_since is not None and now - running_since > profile.startup_timeout:
                _, answer = look(agent, profile, found, job, output_lines=OUTPUT_LINES)
                err = _failed(job, status, answer)
                err.message = (
                    f"job {job.id} runs on {status.node}, but Jupyter did not start within "
                    f"{profile.startup_timeout:g} s"
                )
                raise err
            if now - start > QUEUE_WAIT:
                raise TetherError(
                    f"job {job.id} is still {_line(status)} after {QUEUE_WAIT / 3600:g} hours",
                    hint="try another partition or a shorter --time",
                    code=ExitCode.SCHEDULER,
                )
            text = f"  job {job.id}: {_line(status)}"
            if live:
                sys.stderr.write("\r" + text + "\x1b[K")
                sys.stderr.flush()
            elif text != shown:
                progress.say(text)
            shown = text
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
                    progress.say(f"cancelled job {job.id} ({_line(status)})")
        raise


def partitions(profile: Profile, found: Probe, target: ssh.Target, job: Job) -> list[Partition]:
    """sinfo's partitions and their limits, for an error that says what would work."""
    sched = backend(profile)
    argv = sched.partitions_argv(job.cluster)
    script = f"PATH={shlex.quote(found.login_path)}; export PATH; {shlex.join(argv)}\n"
    res = ssh.run_script(target, script, timeout=60)
    return sched.parse_partitions(res.stdout) if res.ok else []


# --- reaching the node ----------------------------------------------------------------


def bridge_alias(name: str) -> str:
    return f"tether-job-{name}"


def via(name: str, job: Job, login: ssh.Target) -> ssh.Target:
    """The target the forward of ``name``'s job goes through, as ``reach`` set it up
    (for the supervisor and ``down``): the bridge, the node, or the login node (TCP)."""
    if job.method == "tcp":
        return login
    ssh_node = job.method == "ssh"
    return ssh.Target(
        destination=str(job.node) if ssh_node else bridge_alias(name),
        config_file=job_dir(name) / ("ssh_config_node" if ssh_node else "ssh_config"),
        control_dir=login.control_dir,
        connect_timeout=login.connect_timeout,
    )


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


def bridge_command(login: ssh.Target, found: Probe, job: Job, ready: protocol.Ready) -> str:
    """The ProxyCommand: on the login node, srun into the job and run its own sshd on
    stdio. ``srun -u`` keeps the stream unbuffered (without it the key exchange stalls)."""
    session = job.session or ""
    sshd = ready.get("sshd") or "/usr/sbin/sshd"
    srun = ["srun", f"--jobid={job.id}", "--overlap", "-u", "-Q", "-N1", "-n1"]
    srun += [f"-w{ready.get('node')}", *([f"--clusters={job.cluster}"] if job.cluster else [])]
    sshd_argv = [sshd, "-i", "-f", "/dev/null", "-e"]
    for option in (
        f"HostKey={session}/bridge_host_key",
        f"AuthorizedKeysFile={session}/bridge_keys",
        "UsePAM=no",
        "PasswordAuthentication=no",
        "KbdInteractiveAuthentication=no",
        "PubkeyAuthentication=yes",
        "AllowTcpForwarding=yes",
        "AllowStreamLocalForwarding=yes",
        "PermitTTY=no",
        "X11Forwarding=no",
        "PrintMotd=no",
        "LogLevel=ERROR",
    ):
        sshd_argv += ["-o", option]
    inner = f"PATH={shlex.quote(found.login_path)}; export PATH; "
    inner += f"exec {shlex.join(srun + sshd_argv)} 2>/dev/null"
    outer = [*login.base_argv(), "-o", "ControlMaster=no", "-T", "--", login.destination]
    outer += [shlex.join(["sh", "-c", inner])]
    # ssh expands %-tokens in ProxyCommand: the outer ControlPath's %C must stay literal.
    return shlex.join(outer).replace("%", "%%")


def bridge_target(
    login: ssh.Target,
    profile: Profile,
    found: Probe,
    job: Job,
    ready: protocol.Ready,
    host_key: str,
) -> ssh.Target:
    """An ssh Target for the job's node through the bridge; its files written here."""
    d = job_dir(profile.name)
    alias = bridge_alias(profile.name)
    known = d / "known_hosts"
    paths.write_private(known, f"{alias} {' '.join(host_key.split()[:2])}\n")
    lines = [
        "# Written by jupyter-tether for one batch job: the stdio bridge into it.",
        f"Host {alias}",
        f"    HostName {ready.get('node')}",
        f"    User {found.user}",
        f"    ProxyCommand {bridge_command(login, found, job, ready)}",
        f"    IdentityFile {d / 'bridge_key'}",
        "    IdentitiesOnly yes",
        f"    HostKeyAlias {alias}",
        f"    UserKnownHostsFile {known}",
        "    GlobalKnownHostsFile /dev/null",
        "    StrictHostKeyChecking yes",
        "    BatchMode yes",
        "    ServerAliveInterval 5",
        "    ServerAliveCountMax 2",
    ]
    config = d / "ssh_config"
    paths.write_private(config, "\n".join(lines) + "\n")
    return ssh.Target(
        destination=alias,
        config_file=config,
        control_dir=login.control_dir,
        connect_timeout=login.connect_timeout,
    )


# --- the whole of it ------------------------------------------------------------------


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
            progress.say(f"  job {old.id} is {_line(status)}: using it")
        else:
            ended = answer.get("ended")
            how = ended["how"] if ended else status.state
            progress.say(f"  the last job ({old.id}) has ended ({how}): submitting a new one")
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
        progress.say(
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


def reach(
    login: ssh.Target,
    profile: Profile,
    found: Probe,
    job: Job,
    ready: protocol.Ready,
    host_key: str | None,
    *,
    progress: output.Progress,
) -> tuple[ssh.Target, str]:
    """A way to the job's node, the first that works: the stdio bridge through srun,
    then ssh to the node through the login node; a job on TCP goes through the login
    node itself. Returns the target to forward through and the way's name."""
    if ready.get("address"):
        return login, "tcp"
    tried = []
    if host_key and ready.get("sshd"):
        target = bridge_target(login, profile, found, job, ready, host_key)
        try:
            ssh.ensure_master(target, batch=True)
            return target, "bridge"
        except TetherError as exc:
            tried.append(f"srun into the job: {exc.message}")
    else:
        tried.append("srun into the job: no sshd on the node, or no ssh-keygen on the login node")
    target = node_target(login, profile, found, ready)
    try:
        ssh.ensure_master(target, batch=True)
    except TetherError as exc:
        tried.append(f"ssh to {ready.get('node')}: {exc.message}")
    else:
        progress.say(f"  ssh to {ready.get('node')} through {login.destination}")
        return target, "ssh"
    for line in tried:
        progress.say(f"  cannot reach the node by {line}")
    raise TetherError(
        f"cannot reach job {job.id} on {ready.get('node')}: " + "; ".join(tried),
        code=ExitCode.SSH_CONNECT,
    )


def node_target(
    login: ssh.Target, profile: Profile, found: Probe, ready: protocol.Ready
) -> ssh.Target:
    """ssh to the node itself through the login node (sites with pam_slurm_adopt allow
    it while the user has a job there), with the user's own keys and config."""
    node = str(ready.get("node"))
    d = job_dir(profile.name)
    hop = [*login.base_argv(), "-o", "ControlMaster=no", "-W", "%h:%p", "--", login.destination]
    # %h:%p are ssh's own tokens; the outer ControlPath's %C must stay literal.
    proxy = shlex.join(hop).replace("%", "%%").replace("%%h:%%p", "%h:%p")
    user_config = login.config_file or Path.home() / ".ssh" / "config"
    lines = [
        "# Written by jupyter-tether for one batch job: ssh to its node via the login node.",
        f"Host {node}",
        f"    User {found.user}",
        f"    ProxyCommand {proxy}",
        "    BatchMode yes",
        "    StrictHostKeyChecking accept-new",
        "    ServerAliveInterval 5",
        "    ServerAliveCountMax 2",
    ]
    if user_config.is_file():
        lines.append(f"    Include {user_config}")
    config = d / "ssh_config_node"
    paths.write_private(config, "\n".join(lines) + "\n")
    return ssh.Target(
        destination=node,
        config_file=config,
        control_dir=login.control_dir,
        connect_timeout=login.connect_timeout,
    )
