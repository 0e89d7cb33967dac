"""A real Slurm cluster on this machine: a login node and two compute nodes. Root only.

How the pieces fit::

    workstation (this process, the host's namespaces; munged runs here)
        | veth <prefix>-h 198.18.A.1/30 -- wan 198.18.A.2/30   (cut_link / restore_link)
    login   netns <prefix>-login, hostname "login": slurmctld, sshd on port 22
        | bridge br0 198.18.B.1/24 inside the login namespace
    node1   netns <prefix>-node1, hostname "node1", 198.18.B.2: slurmd (sshd on request)
    node2   netns <prefix>-node2, hostname "node2", 198.18.B.3: slurmd (sshd on request)

Each of the three machines is a *holder*: a ``sleep infinity`` started with ``ip netns
exec NS unshare --uts --mount --propagation private``, which sets the hostname and
mounts the machine's private view before it sleeps: the lab's ``etc`` on
``/etc/slurm`` (so clients find ``slurm.conf`` without ``SLURM_CONF``) and the lab's
hosts file on ``/etc/hosts``; the compute nodes also get a tmpfs of their own on
``/tmp`` and ``/run``. Unix sockets follow the mount namespace, so a socket in a node's
``/tmp`` is unreachable from the login node, the other node and the workstation, as on
a real cluster. Daemons and commands enter a machine with ``nsenter`` into its
holder's network, mount and UTS namespaces (:meth:`Cluster.node_exec`); the login
node's sshd too, so its sessions see the same ``/etc/slurm``. The host's own
``/etc/slurm`` is only a mount point here: nothing is written into it.

Packets: the two links are the only routes (no default route anywhere, the login
node does not forward), and :func:`testing.netns.ensure_blackhole` keeps anything
else for 198.18.0.0/15 on this machine. Taking the workstation's link down leaves
login <-> nodes working.

Files: everything (slurm.conf, munge key and socket, state, spools, logs, the sshds'
work directories) lives in one directory under /var/tmp, outside the nodes' private
/tmp, and is removed by :meth:`Cluster.stop`. munged is strict about owners and modes,
hence the directory's ``munge``-owned ``munge`` subdirectory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from jupyter_tether.errors import TetherError
from jupyter_tether.proc import Result, pid_alive, run, terminate
from testing._run import POLL, check, must, require_root
from testing.netns import ensure_blackhole, exec_argv, free_slot, unique_prefix
from testing.sshd import HostEntry, SshServer, host_entry, start_sshd, stop_sshd, write_ssh_config

LOGIN = "login"
NODES = ("node1", "node2")
SLURMCTLD_PORT = 16817  # not Slurm's defaults (6817/6818), though each namespace's
SLURMD_PORT = 16818  # ports are its own
LAB_PARENT = Path("/var/tmp")  # noqa: S108 -- not /tmp: the nodes mount their own /tmp
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
START_TIMEOUT = 20.0
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "srun", "munged", "mungekey", "nsenter")


def missing_binaries() -> list[str]:
    """The programs the lab needs that are not installed."""
    return [b for b in BINARIES if shutil.which(b, path=CLEAN_PATH) is None]


@dataclass(frozen=True)
class Job:
    """One line of ``squeue``."""

    job_id: int
    user: str
    partition: str
    state: str
    reason: str
    nodes: str


SQUEUE_FORMAT = "%i|%u|%P|%T|%r|%N"


def parse_squeue(text: str) -> list[Job]:
    """Lines of ``squeue -h -o SQUEUE_FORMAT``."""
    jobs = []
    for line in text.splitlines():
        if line.strip():
            job_id, user, partition, state, reason, nodes = line.split("|", 5)
            jobs.append(Job(int(job_id), user, partition, state, reason, nodes))
    return jobs


def slurm_conf_text(*, lab: Path, controller_address: str, nodes: Mapping[str, str]) -> str:
    """The lab's slurm.conf (pure; :meth:`Cluster.start` writes it)."""
    node_lines = [
        f"NodeName={name} NodeAddr={address} CPUs=2 State=UNKNOWN"
        for name, address in nodes.items()
    ]
    names = ",".join(nodes)
    lines = [
        "# Written by jupyter-tether's Slurm lab (testing/cluster.py).",
        "ClusterName=tetherlab",
        f"SlurmctldHost={LOGIN}({controller_address})",
        f"SlurmctldPort={SLURMCTLD_PORT}",
        f"SlurmdPort={SLURMD_PORT}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={lab / 'munge' / 'munge.socket'}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={lab / 'state'}",
        f"SlurmdSpoolDir={lab / 'spool' / '%n'}",
        f"SlurmctldPidFile={lab / 'run' / 'slurmctld.pid'}",
        # /run is each node's own, so one name serves all slurmds.
        "SlurmdPidFile=/run/slurmd.pid",
        f"SlurmctldLogFile={lab / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={lab / 'log' / 'slurmd-%n.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        # Ended jobs leave squeue after 10 s, not 300; clients give up on a stopped
        # controller after a few seconds.
        "MinJobAge=10",
        "MessageTimeout=3",
        *node_lines,
        f"PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP",
        f"PartitionName=short Nodes={names} MaxTime=2 State=UP",
    ]
    return "\n".join(lines) + "\n"


def hosts_text(addresses: Mapping[str, str]) -> str:
    """The /etc/hosts every machine of the lab sees."""
    lines = ["127.0.0.1 localhost", *(f"{addr} {name}" for name, addr in addresses.items())]
    return "\n".join(lines) + "\n"


def _holder_script(*, hostname: str, etc: Path, hosts: Path, private: bool) -> str:
    """What a holder runs before it sleeps: its hostname and private mounts."""
    q = shlex.quote
    steps = ["set -e", f"hostname {q(hostname)}"]
    if private:
        steps += [
            "mount -t tmpfs -o mode=1777 lab-tmp /tmp",
            "mount -t tmpfs -o mode=0755 lab-run /run",
            "mkdir -p /run/sshd",  # sshd's privilege separation directory
        ]
    steps += [
        f"mount --bind {q(str(etc))} /etc/slurm",
        f"mount --bind {q(str(hosts))} /etc/hosts",
        "exec sleep infinity",
    ]
    return "\n".join(steps)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(frozen=True)
class _Net:
    """Names and addresses of one lab's networks."""

    prefix: str
    slot: int

    @property
    def host_if(self) -> str:
        return f"{self.prefix}-h"

    def netns(self, machine: str) -> str:
        return f"{self.prefix}-{machine}"

    @property
    def host_address(self) -> str:
        return f"198.18.{2 * self.slot}.1"

    @property
    def login_address(self) -> str:  # the login node, as the workstation sees it
        return f"198.18.{2 * self.slot}.2"

    def inner_address(self, machine: str) -> str:  # on the login--nodes bridge
        index = 1 if machine == LOGIN else 2 + NODES.index(machine)
        return f"198.18.{2 * self.slot + 1}.{index}"


class Cluster:
    """A login node and two compute nodes with Slurm, munge and sshd (see the module).

    The constructor only records its arguments; :meth:`start` builds the lab and
    :meth:`stop` removes all of it. ``users`` are the accounts the login node's sshd
    serves (with ``client_key``); ``node_sshd`` starts an sshd on each compute node
    too, reached from the workstation through the login node (``ProxyJump``).
    """

    def __init__(
        self,
        *,
        users: Sequence[str],
        client_key: Path,
        prefix: str | None = None,
        node_sshd: bool = False,
        keep_files: bool = False,
    ) -> None:
        self.users = tuple(users)
        self.client_key = client_key
        self.prefix = prefix or unique_prefix("sl")
        if not re.fullmatch(r"[a-z][a-z0-9]{0,10}", self.prefix):
            raise TetherError(
                f"lab prefix {self.prefix!r} must be 1-11 lowercase letters or digits"
            )
        self.node_sshd = node_sshd
        self.keep_files = keep_files
        self.dir: Path | None = None
        self._net: _Net | None = None
        self._holders: dict[str, subprocess.Popen[bytes]] = {}
        self._daemons: dict[str, subprocess.Popen[bytes]] = {}
        self._sshds: dict[str, SshServer] = {}

    # ------------------------------------------------------------------ addresses

    @property
    def net(self) -> _Net:
        if self._net is None:
            raise TetherError("the Slurm lab is not started")
        return self._net

    @property
    def lab(self) -> Path:
        if self.dir is None:
            raise TetherError("the Slurm lab is not started")
        return self.dir

    @property
    def login_address(self) -> str:
        """The login node's address, as the workstation sees it."""
        return self.net.login_address

    @property
    def login_sshd(self) -> SshServer:
        return self._sshds[LOGIN]

    @property
    def ssh_port(self) -> int:
        return self.login_sshd.port

    @property
    def host_key(self) -> str:
        """The login sshd's public host key (``ssh-ed25519 AAAA...``)."""
        return self.login_sshd.host_public_key

    @property
    def ssh_config(self) -> Path:
        """An ssh config (``ssh -F``) with the aliases of :meth:`alias`."""
        return self.lab / "ssh" / "config"

    @staticmethod
    def alias(user: str, machine: str = LOGIN) -> str:
        """The ssh alias that logs ``user`` in to ``machine`` (``login-tether-test``)."""
        return f"{machine}-{user}"

    def host_entries(self) -> list[HostEntry]:
        """One entry per user for the login node and, with ``node_sshd``, per node."""
        entries = []
        for user in self.users:
            login = self.alias(user)
            entries.append(host_entry(self.login_sshd, login, user=user))
            for node in NODES:
                if node in self._sshds:
                    server = self._sshds[node]
                    entries.append(
                        host_entry(server, self.alias(user, node), user=user, proxy_jump=login)
                    )
        return entries

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Build the networks, start munged, slurmctld, the slurmds and the sshds, and
        wait until both nodes are idle. Whatever fails is undone."""
        require_root("building the Slurm lab")
        missing = missing_binaries()
        if missing:
            raise TetherError(
                f"the Slurm lab needs {', '.join(missing)}",
                hint="apt install slurmctld slurmd slurm-client munge",
            )
        if self.dir is not None:
            raise TetherError("the Slurm lab is already started")
        ensure_blackhole()
        try:
            self._make_dir()
            self._net = _Net(self.prefix, free_slot())
            self._build_network()
            self._write_files()
            self._start_holders()
            self._start_munged()
            self.start_controller(recover=False)
            for node in NODES:
                self._start_slurmd(node)
            self._start_sshds()
            self.wait_nodes({"idle"}, timeout=START_TIMEOUT)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End everything :meth:`start` started, remove the namespaces and the files.
        Safe to call twice, and after a failed start."""
        for server in self._sshds.values():
            stop_sshd(server)
        self._sshds.clear()
        for name in [n for n in self._daemons if n != "munged"]:
            self._stop_daemon(name)
        if self._net is not None:
            self._teardown_network(self._net)
        for holder in self._holders.values():
            terminate([holder.pid])
            with contextlib.suppress(subprocess.TimeoutExpired):
                holder.wait(timeout=5)
        self._holders.clear()
        self._stop_daemon("munged")
        self._net = None
        if self.dir is not None and not self.keep_files:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def _make_dir(self) -> None:
        lab = Path(tempfile.mkdtemp(prefix=f"tether-slurm-{self.prefix}-", dir=LAB_PARENT))
        lab.chmod(0o755)  # the test accounts read slurm.conf and reach the munge socket
        self.dir = lab
        for sub in ("etc", "state", "spool", "log", "run", "ssh", *(f"spool/{n}" for n in NODES)):
            (lab / sub).mkdir(mode=0o755)
        munge = lab / "munge"
        munge.mkdir(mode=0o755)
        shutil.chown(munge, "munge", "munge")
        # The host's /etc/slurm is only the mount point of the machines' binds.
        Path("/etc/slurm").mkdir(mode=0o755, exist_ok=True)

    def _build_network(self) -> None:
        net = self.net

        def peer(name: str, ns: str) -> list[str]:
            return ["peer", "name", name, "netns", ns]

        login = net.netns(LOGIN)
        steps = [
            ["ip", "netns", "add", login],
            ["ip", "link", "add", net.host_if, "type", "veth", *peer("wan", login)],
            ["ip", "addr", "add", f"{net.host_address}/30", "dev", net.host_if],
            ["ip", "-n", login, "addr", "add", f"{net.login_address}/30", "dev", "wan"],
            [*exec_argv(login), "sysctl", "-qw", "net.ipv4.ip_forward=0"],
            ["ip", "-n", login, "link", "add", "br0", "type", "bridge"],
            ["ip", "-n", login, "addr", "add", f"{net.inner_address(LOGIN)}/24", "dev", "br0"],
            ["ip", "-n", login, "link", "set", "lo", "up"],
            ["ip", "-n", login, "link", "set", "br0", "up"],
            ["ip", "-n", login, "link", "set", "wan", "up"],
            ["ip", "link", "set", net.host_if, "up"],
        ]
        for node in NODES:
            ns, port = net.netns(node), f"v-{node}"
            steps += [
                ["ip", "netns", "add", ns],
                ["ip", "-n", login, "link", "add", port, "type", "veth", *peer("eth0", ns)],
                ["ip", "-n", login, "link", "set", port, "master", "br0"],
                ["ip", "-n", login, "link", "set", port, "up"],
                ["ip", "-n", ns, "addr", "add", f"{net.inner_address(node)}/24", "dev", "eth0"],
                ["ip", "-n", ns, "link", "set", "lo", "up"],
                ["ip", "-n", ns, "link", "set", "eth0", "up"],
            ]
        for argv in steps:
            must(argv, "building the Slurm lab's network")

    def _teardown_network(self, net: _Net) -> None:
        namespaces = [
            net.netns(m) for m in (LOGIN, *NODES) if Path("/run/netns", net.netns(m)).exists()
        ]
        pids: list[int] = []
        for ns in namespaces:  # jobs, steps, sessions: whatever still runs there
            out = run(["ip", "netns", "pids", ns], timeout=10).stdout
            pids.extend(int(p) for p in out.split() if p.isdigit())
        if pids:
            terminate(pids)
        for ns in namespaces:
            run(["ip", "netns", "delete", ns], timeout=30)
        if Path("/sys/class/net", net.host_if).exists():
            run(["ip", "link", "delete", net.host_if], timeout=30)
        deadline = time.monotonic() + 10
        while Path("/sys/class/net", net.host_if).exists():
            if time.monotonic() > deadline:
                raise TetherError(f"interface {net.host_if} is still there 10 s after teardown")
            time.sleep(POLL)

    def _write_files(self) -> None:
        lab, net = self.lab, self.net
        conf = slurm_conf_text(
            lab=lab,
            controller_address=net.inner_address(LOGIN),
            nodes={node: net.inner_address(node) for node in NODES},
        )
        (lab / "etc" / "slurm.conf").write_text(conf)
        addresses = {m: net.inner_address(m) for m in (LOGIN, *NODES)}
        (lab / "etc" / "hosts").write_text(hosts_text(addresses))

    def _start_holders(self) -> None:
        lab = self.lab
        for machine in (LOGIN, *NODES):
            script = _holder_script(
                hostname=machine,
                etc=lab / "etc",
                hosts=lab / "etc" / "hosts",
                private=machine != LOGIN,
            )
            unshare = ["unshare", "--uts", "--mount", "--propagation", "private"]
            # nsenter rather than ip netns exec, which mounts a fresh /sys without
            # /sys/fs/cgroup, and slurmd will not start without a cgroup filesystem.
            netns = f"--net=/run/netns/{self.net.netns(machine)}"
            argv = ["nsenter", netns, "--", *unshare, "sh", "-c", script]
            self._holders[machine] = self._spawn(argv, lab / "log" / f"holder-{machine}.out")
        # nsenter, unshare and sh all exec, so the pid ends up running sleep.
        deadline = time.monotonic() + 10
        for machine, holder in self._holders.items():
            while _comm(holder.pid) != "sleep":
                if holder.poll() is not None or time.monotonic() > deadline:
                    raise TetherError(
                        f"the {machine} machine of the Slurm lab did not come up",
                        details=_tail(lab / "log" / f"holder-{machine}.out"),
                    )
                time.sleep(POLL)

    def _spawn(self, argv: Sequence[str], output: Path) -> subprocess.Popen[bytes]:
        with output.open("ab") as out:
            return subprocess.Popen(  # stopped by stop()
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"},
            )

    def _start_munged(self) -> None:
        munge = self.lab / "munge"
        key = munge / "munge.key"
        must(["mungekey", "--create", f"--keyfile={key}"], "creating the munge key")
        shutil.chown(key, "munge", "munge")
        key.chmod(0o600)
        socket = munge / "munge.socket"
        argv = [
            "runuser", "-u", "munge", "--", "munged", "-F",
            f"--key-file={key}", f"--socket={socket}", f"--pid-file={munge / 'munged.pid'}",
            f"--seed-file={munge / 'seed'}", f"--log-file={munge / 'munged.log'}",
        ]  # fmt: skip
        self._daemons["munged"] = self._spawn(argv, self.lab / "log" / "munged.out")
        self._wait(
            "munged",
            lambda: run(["munge", "-n", f"--socket={socket}"], timeout=5).ok,
            logs=[munge / "munged.log", self.lab / "log" / "munged.out"],
        )

    def _start_slurmd(self, node: str) -> None:
        conf = self.lab / "etc" / "slurm.conf"
        argv = [*self.enter(node), "slurmd", "-D", "-f", str(conf)]
        self._daemons[f"slurmd-{node}"] = self._spawn(argv, self.lab / "log" / f"{node}.out")

    def _start_sshds(self) -> None:
        self._start_sshd(LOGIN, self.login_address)
        if self.node_sshd:
            self.start_node_sshds()
        else:
            write_ssh_config(self.ssh_config, self.host_entries())

    def start_node_sshds(self) -> None:
        """Start an sshd on each compute node (once), for tests of "ssh to the node":
        the same users and client key as the login node's, reached through it."""
        for node in NODES:
            if node not in self._sshds:
                self._start_sshd(node, self.net.inner_address(node))
        write_ssh_config(self.ssh_config, self.host_entries())

    def stop_node_sshds(self) -> None:
        """Stop the compute nodes' sshds again (the login node's stays)."""
        for node in NODES:
            server = self._sshds.pop(node, None)
            if server is not None:
                stop_sshd(server)
        write_ssh_config(self.ssh_config, self.host_entries())

    def _start_sshd(self, machine: str, listen: str) -> None:
        self._sshds[machine] = start_sshd(
            self.lab / f"sshd-{machine}",
            users=self.users,
            listen=listen,
            netns=self.net.netns(machine),
            inside=self.enter(machine),
            client_key=self.client_key,
        )

    def _wait(
        self,
        name: str,
        ready: Callable[[], bool],
        *,
        logs: Iterable[Path],
        timeout: float = START_TIMEOUT,
    ) -> None:
        """Poll ``ready`` until it holds, while daemon ``name`` runs (bounded)."""
        process = self._daemons.get(name)
        deadline = time.monotonic() + timeout
        while not ready():
            exited = process is not None and process.poll() is not None
            if exited or time.monotonic() > deadline:
                what = "exited" if exited else f"was not ready within {timeout:g} s"
                raise TetherError(
                    f"{name} of the Slurm lab {what}",
                    details="\n".join(_tail(p) for p in logs).strip() or None,
                )
            time.sleep(POLL)

    def _stop_daemon(self, name: str) -> None:
        process = self._daemons.pop(name, None)
        if process is None or process.poll() is not None:
            return
        terminate([process.pid], timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)

    # ------------------------------------------------------------------ running things

    def enter(self, machine: str) -> list[str]:
        """The argv prefix that runs a command on ``machine`` (``login`` or a node)."""
        holder = self._holders.get(machine)
        if holder is None:
            raise TetherError(
                f"no machine {machine!r} in the Slurm lab",
                hint=f"one of {LOGIN}, {', '.join(NODES)}",
            )
        return ["nsenter", "-t", str(holder.pid), "-n", "-m", "-u", "-F", "--"]

    def node_exec(
        self, machine: str, argv: Sequence[str], *, input: str | None = None, timeout: float = 30
    ) -> Result:
        """Run ``argv`` as root on ``machine`` (``ss -ltnp`` on ``node1``, say)."""
        env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}
        return run(
            [*self.enter(machine), *argv],
            input=input,
            timeout=timeout,
            env=env,
            stdin_devnull=input is None,
        )

    def as_user(
        self, user: str, argv: Sequence[str], *, input: str | None = None, timeout: float = 30
    ) -> Result:
        """Run ``argv`` on the login node as ``user``, in their home, with a clean
        environment (no ``SLURM_CONF``: the login node has ``/etc/slurm/slurm.conf``)."""
        home = os.path.expanduser(f"~{user}")
        env = [f"PATH={CLEAN_PATH}", "LANG=C.UTF-8", f"HOME={home}", f"USER={user}"]
        inner = ["runuser", "-u", user, "--", "env", "-i", "-C", home, *env, *argv]
        return self.node_exec(LOGIN, inner, input=input, timeout=timeout)

    def ssh(
        self, user: str, command: str, *, machine: str = LOGIN, input: str | None = None,
        timeout: float = 30,
    ) -> Result:  # fmt: skip
        """``ssh`` from the workstation to ``machine`` as ``user``; ``command`` is a
        remote shell command line."""
        argv = ["ssh", "-F", str(self.ssh_config), self.alias(user, machine), command]
        return run(argv, input=input, timeout=timeout, stdin_devnull=input is None)

    def slurm(self, argv: Sequence[str], *, timeout: float = 30) -> Result:
        """A Slurm command as root on the login node."""
        return self.node_exec(LOGIN, argv, timeout=timeout)

    def submit(self, user: str, script: str, *args: str) -> int:
        """``sbatch --parsable ARGS`` of ``script`` (on stdin) as ``user``: the job id."""
        result = self.as_user(user, ["sbatch", "--parsable", *args], input=script)
        check(result, f"sbatch as {user}")
        return int(result.stdout.strip().split(";")[0])

    def squeue(self, job: int | None = None) -> list[Job]:
        """The queue (all users and states, ended jobs too until MinJobAge), or just
        ``job`` ([] once it has left the queue)."""
        argv = ["squeue", "-h", "-a", "-t", "all", "-o", SQUEUE_FORMAT]
        if job is not None:
            argv += ["-j", str(job)]
        result = self.slurm(argv)
        if job is not None and "Invalid job id" in result.stderr:
            return []
        return parse_squeue(check(result, "squeue").stdout)

    def wait_state(self, job: int, states: Iterable[str], timeout: float = 30) -> Job:
        """Poll until ``job`` is in one of ``states`` (``RUNNING``, ...) and return it."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        last: list[Job] = []
        while True:
            last = self.squeue(job)
            if last and last[0].state in wanted:
                return last[0]
            if time.monotonic() > deadline:
                seen = f"{last[0].state} ({last[0].reason})" if last else "not in the queue"
                raise TetherError(
                    f"job {job} is {seen}, not {'/'.join(sorted(wanted))}, after {timeout:g} s",
                    details=self.logs(),
                )
            time.sleep(0.2)

    def nodes(self) -> dict[str, str]:
        """Each node's state as ``sinfo`` shows it (``idle``, ``drain``, ``alloc``...)."""
        result = check(self.slurm(["sinfo", "-h", "-N", "-o", "%N %t"]), "sinfo")
        return dict(line.split() for line in result.stdout.splitlines() if line.strip())

    def wait_nodes(self, states: set[str], timeout: float = 30) -> None:
        """Wait until every node is in one of ``states``."""

        def ready() -> bool:
            result = self.slurm(["sinfo", "-h", "-N", "-o", "%N %t"])
            shown = dict(line.split() for line in result.stdout.splitlines() if line.strip())
            return result.ok and set(shown) == set(NODES) and set(shown.values()) <= states

        self._wait("slurmctld", ready, logs=self._log_files(), timeout=timeout)

    def drain(self, node: str, reason: str = "drained by the lab") -> None:
        argv = ["scontrol", "update", f"NodeName={node}", "State=DRAIN", f"Reason={reason}"]
        check(self.slurm(argv), f"draining {node}")

    def resume(self, node: str) -> None:
        check(self.slurm(["scontrol", "update", f"NodeName={node}", "State=RESUME"]), "resume")

    def stop_controller(self) -> None:
        """Stop slurmctld (SIGTERM: it saves its state); jobs keep running on the nodes."""
        self._stop_daemon("slurmctld")

    def start_controller(self, *, recover: bool = True) -> None:
        """Start slurmctld (with ``-R``, which keeps the jobs) and wait until it answers."""
        if "slurmctld" in self._daemons:
            return
        conf = self.lab / "etc" / "slurm.conf"
        argv = [*self.enter(LOGIN), "slurmctld", "-D", "-f", str(conf)]
        if recover:
            argv.append("-R")
        out = self.lab / "log" / "slurmctld.out"
        self._daemons["slurmctld"] = self._spawn(argv, out)
        self._wait(
            "slurmctld",
            lambda: "UP" in self.slurm(["scontrol", "ping"], timeout=10).stdout,
            logs=[self.lab / "log" / "slurmctld.log", out],
        )

    def cut_link(self) -> None:
        """Take the workstation--login link down; login--nodes stays up."""
        must(["ip", "link", "set", self.net.host_if, "down"], "taking the link down")

    def restore_link(self) -> None:
        """Bring the workstation--login link back and wait until it is up."""
        must(["ip", "link", "set", self.net.host_if, "up"], "bringing the link up")
        operstate = Path("/sys/class/net") / self.net.host_if / "operstate"
        deadline = time.monotonic() + 5
        while operstate.read_text().strip() != "up":
            if time.monotonic() > deadline:
                raise TetherError(f"{self.net.host_if} did not come up within 5 s")
            time.sleep(POLL)

    def reset(self, timeout: float = 30) -> None:
        """Back to a quiet cluster between tests: link up, controller running, nodes
        resumed, every job cancelled and gone from the nodes."""
        self.restore_link()
        if not self.node_sshd:
            self.stop_node_sshds()  # a test started them
        self.start_controller()
        for user in self.users:
            check(self.slurm(["scancel", f"--user={user}"]), f"cancelling {user}'s jobs")
        for node, state in self.nodes().items():
            if "drain" in state or state.startswith("drng"):
                self.resume(node)

        def quiet() -> bool:
            active = {"PENDING", "RUNNING", "COMPLETING", "SUSPENDED", "CONFIGURING"}
            return not any(job.state in active for job in self.squeue())

        self._wait("slurmctld", quiet, logs=self._log_files(), timeout=timeout)
        self.wait_nodes({"idle"}, timeout=timeout)

    # ------------------------------------------------------------------ reports

    def _log_files(self) -> list[Path]:
        if self.dir is None:
            return []
        files = sorted((self.dir / "log").glob("*"))
        files.append(self.dir / "munge" / "munged.log")
        files += [server.log for server in self._sshds.values()]
        return files

    def logs(self, lines: int = 40) -> str:
        """The last lines of every daemon's log, for a failure report."""
        parts = []
        for path in self._log_files():
            text = _tail(path, lines)
            if text:
                parts.append(f"==> {path.parent.name}/{path.name} <==\n{text}")
        alive = {name: pid_alive(p.pid) for name, p in self._daemons.items()}
        parts.append(f"daemons alive: {alive}")
        return "\n".join(parts)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
