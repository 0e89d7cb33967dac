"""Reaching a job's node from the workstation, with no TCP port open by default: the
stdio bridge through the scheduler, else ssh to the node, else (``via``) the login node
to a TCP port."""

from __future__ import annotations

import shlex
from pathlib import Path

from jupyter_tether import output, paths, ssh
from jupyter_tether.batch.job import Job, job_dir
from jupyter_tether.config import Profile
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.probe import Probe
from jupyter_tether.remote import protocol


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
    ]
    return _target(login, alias, d / "ssh_config", lines)


def _target(login: ssh.Target, destination: str, config: Path, lines: list[str]) -> ssh.Target:
    """Write ``config`` (0600) and return a target that uses it and the login's control
    directory. Unattended, with the master's keep-alives."""
    lines = [*lines, "    BatchMode yes", "    ServerAliveInterval 5", "    ServerAliveCountMax 2"]
    paths.write_private(config, "\n".join(lines) + "\n")
    return ssh.Target(
        destination=destination,
        config_file=config,
        control_dir=login.control_dir,
        connect_timeout=login.connect_timeout,
    )


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
        progress.note(f"  cannot reach the node by {line}")
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
        "    StrictHostKeyChecking accept-new",
    ]
    if user_config.is_file():
        lines.append(f"    Include {user_config}")
    return _target(login, node, d / "ssh_config_node", lines)
