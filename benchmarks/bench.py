"""The sandbox a benchmark run works in: accounts, a real sshd, ssh config, tether's dirs.

Everything is real: the system's OpenSSH server and client, the `tether` CLI run as a
subprocess (as a user would run it, interpreter start included), JupyterLab from PyPI.
The remote accounts are dedicated non-root ones (``tether-bench``, ``tether-bench-bare``
for cold starts, ``tether-bench-NN`` for the scale scenario), so a run never touches
the test suite's accounts. Root is required.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jupyter_tether.errors import TetherError
from jupyter_tether.proc import terminate
from testing.accounts import ensure_user
from testing.envs import make_jupyter_env
from testing.helpers.cli import write_profiles
from testing.helpers.lock import exclusive
from testing.helpers.ssh import kill_masters
from testing.helpers.users import home_of
from testing.netns import Topology, build_topology, teardown_topology, unique_prefix
from testing.sshd import (
    HostEntry,
    SshServer,
    generate_key,
    host_entry,
    start_sshd,
    stop_sshd,
    write_ssh_config,
)

BENCH_USER = "tether-bench"
BARE_USER = "tether-bench-bare"
# Kept between runs so that a second run does not rebuild them: a JupyterLab venv that
# every bench account can read, and the peer tools installed from PyPI.
CACHE = Path("/var/tmp/jupyter-tether-bench")  # root-only, persistent
T = TypeVar("T")


def scale_user(i: int) -> str:
    return f"tether-bench-{i:02d}"


def scale_host(i: int) -> str:
    return f"tb-s{i:02d}"


@dataclass(frozen=True)
class TetherRun:
    rc: int
    out: str
    err: str
    seconds: float

    def json(self) -> dict[str, Any]:
        data = json.loads(self.out)
        if not isinstance(data, dict):
            raise ValueError(f"tether printed {self.out!r}")
        return data

    def error_line(self) -> str:
        lines = [ln.strip() for ln in self.err.splitlines() if ln.strip()]
        first = next((ln for ln in lines if ln.startswith("error:")), lines[0] if lines else "")
        return f"{first} (exit {self.rc})"


@dataclass(frozen=True)
class Remote:
    """Where a topology's hosts are: namespaces, and the ssh aliases that reach them."""

    topology: Topology
    jump_host: str  # tether-bench on the jump host (the cut link is in front of it)
    far_bare_host: str  # tether-bench-bare on the server behind the jump host, no internet


@dataclass
class Bench:
    workdir: Path
    server: SshServer
    ssh_config: Path
    env: Path  # a venv with JupyterLab, readable by every bench account
    tether_env: dict[str, str]
    entries: dict[str, HostEntry]
    _global: contextlib.ExitStack
    _scenario: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _resources: dict[str, Any] = field(default_factory=dict)
    _profiles: dict[str, dict[str, object]] = field(default_factory=dict)
    _remote: Remote | None = None

    main_host: str = "tb-main"
    bare_host: str = "tb-bare"

    # ------------------------------------------------------------------ running things

    def ssh_argv(self, host: str, *extra: str) -> list[str]:
        """A plain ssh as a user would type it: own connection, no multiplexing."""
        base = ["ssh", "-F", str(self.ssh_config), "-o", "ControlMaster=no"]
        return [*base, "-o", "ControlPath=none", *extra, host]

    def ssh(
        self, host: str, command: str, *, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in ``host``'s login shell, like ``ssh host 'command'``."""
        return subprocess.run(
            [*self.ssh_argv(host, "-T"), command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def tether(
        self, *args: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> TetherRun:
        """``tether ARGS`` in a new process, with the bench's config, state and ssh config
        (``env`` overrides some of it)."""
        start = time.monotonic()
        res = subprocess.run(
            [sys.executable, "-m", "jupyter_tether", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.tether_env, **(env or {})},
            check=False,
        )
        return TetherRun(res.returncode, res.stdout, res.stderr, time.monotonic() - start)

    def tether_popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "jupyter_tether", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **self.tether_env},
        )

    def profile(self, name: str, **keys: object) -> None:
        self._profiles[name] = keys
        write_profiles(Path(self.tether_env["JUPYTER_TETHER_CONFIG"]), self._profiles)

    def add_hosts(self, *entries: HostEntry) -> None:
        for entry in entries:
            self.entries[entry.alias] = entry
        write_ssh_config(self.ssh_config, list(self.entries.values()))

    def end_masters(self) -> None:
        """End every ssh ControlMaster tether started (a "new shell, no master")."""
        kill_masters(Path(self.tether_env["JUPYTER_TETHER_RUNTIME_DIR"]))

    def master_pid(self, host: str) -> int | None:
        cm = Path(self.tether_env["JUPYTER_TETHER_RUNTIME_DIR"]) / "cm"
        res = subprocess.run(
            [*self.ssh_argv(host)[:3], "-o", f"ControlPath={cm}/%C", "-O", "check", host],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        text = res.stderr + res.stdout
        if res.returncode != 0 or "pid=" not in text:
            return None
        return int(text.split("pid=", 1)[1].split(")", 1)[0])

    # ------------------------------------------------------------------ resources

    def resource(self, key: str, make: Callable[[contextlib.ExitStack], T]) -> T:
        """A resource shared by the repetitions of the current scenario: made on first
        use, released (through the stack ``make`` registers on) when the scenario ends."""
        if key not in self._resources:
            self._resources[key] = make(self._scenario)
        value: T = self._resources[key]
        return value

    def end_scenario(self) -> None:
        try:
            self._scenario.close()
        finally:
            self._scenario = contextlib.ExitStack()
            self._resources.clear()

    def remote(self) -> Remote:
        """The namespace topology (built on first use, kept for the whole run)."""
        if self._remote is None:
            self._remote = _build_remote(self)
        return self._remote

    def accounts(self, users: Sequence[str]) -> None:
        """Make sure ``users`` exist (the sshd serves them from its start)."""
        for user in users:
            ensure_user(user)


# ---------------------------------------------------------------------- accounts


def user_pids(user: str) -> list[int]:
    uid = pwd.getpwnam(user).pw_uid
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
    return pids


def stop_user_processes(user: str) -> None:
    """End every process of a bench account (all of them were started by this run)."""
    for _ in range(3):  # a tmux server may start a child while we look
        pids = user_pids(user)
        if not pids:
            return
        terminate(pids)


def reset_home(user: str) -> None:
    """Make ``user`` a bare account again: no processes, an empty home."""
    stop_user_processes(user)
    root = home_of(user)
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def write_as(user: str, path: Path, data: bytes) -> None:
    path.write_bytes(data)
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)


# ---------------------------------------------------------------------- setting up


@contextlib.contextmanager
def open_bench(*, scale_accounts: int) -> Iterator[Bench]:
    """Build the sandbox, yield it, and take all of it down again (also on errors)."""
    if os.geteuid() != 0:
        raise SystemExit("the benchmarks need root: they create accounts and network namespaces")
    with contextlib.ExitStack() as stack:
        CACHE.mkdir(parents=True, exist_ok=True)
        # One benchmark run at a time on a machine: two would share the bench accounts
        # (and one would empty the bare account's home under the other's feet).
        lock = CACHE / "run.lock"
        try:
            stack.enter_context(
                exclusive(
                    lock,
                    timeout=3600,
                    busy=f"another benchmark run held {lock} for 3600 s",
                    waiting="waiting for another benchmark run to finish",
                )
            )
        except TetherError as exc:
            raise SystemExit(exc.message) from None
        workdir = Path(tempfile.mkdtemp(prefix="tbench-", dir="/tmp"))
        workdir.chmod(0o711)
        if os.environ.get("JUPYTER_TETHER_KEEP_SANDBOX") != "1":
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        users = [BENCH_USER, BARE_USER, *(scale_user(i) for i in range(1, scale_accounts + 1))]
        for user in users:
            ensure_user(user)
        stack.callback(_stop_all, users)
        env = make_jupyter_env("root", CACHE / "env")
        key = generate_key(workdir / "ssh" / "id_ed25519", comment="tether-bench")
        server = start_sshd(workdir / "sshd", users=users, client_key=key)
        stack.callback(stop_sshd, server)
        runtime = Path(tempfile.mkdtemp(prefix="tbr-", dir="/tmp"))
        stack.callback(shutil.rmtree, runtime, ignore_errors=True)
        tether_env = {
            "JUPYTER_TETHER_CONFIG": str(workdir / "tether" / "config.toml"),
            "JUPYTER_TETHER_STATE_DIR": str(workdir / "tether" / "state"),
            "JUPYTER_TETHER_CACHE_DIR": str(workdir / "tether" / "cache"),
            "JUPYTER_TETHER_RUNTIME_DIR": str(runtime),
            "JUPYTER_TETHER_SSH_CONFIG": str(workdir / "ssh" / "config"),
        }
        (workdir / "tether").mkdir()
        bench = Bench(
            workdir=workdir,
            server=server,
            ssh_config=workdir / "ssh" / "config",
            env=env,
            tether_env=tether_env,
            entries={},
            _global=stack,
        )
        bench.add_hosts(
            host_entry(server, bench.main_host, user=BENCH_USER),
            host_entry(server, bench.bare_host, user=BARE_USER),
            *(
                host_entry(server, scale_host(i), user=scale_user(i))
                for i in range(1, scale_accounts + 1)
            ),
        )
        bench.profile(bench.main_host, env=str(env))
        bench.profile(bench.bare_host)
        for i in range(1, scale_accounts + 1):
            bench.profile(scale_host(i), env=str(env))
        stack.callback(bench.end_masters)
        stack.callback(_down_all, bench)
        stack.callback(bench.end_scenario)
        yield bench


def _down_all(bench: Bench) -> None:
    """`tether down` whatever this run left up (a scenario that failed half-way)."""
    listing = bench.tether("ls", "--json", timeout=60)
    with contextlib.suppress(ValueError):
        records = json.loads(listing.out or "[]")
        names = [r["name"] for r in records] if isinstance(records, list) else []
        for name in names:
            bench.tether("down", name, timeout=60)


def _stop_all(users: Sequence[str]) -> None:
    for user in users:
        stop_user_processes(user)


def _build_remote(bench: Bench) -> Remote:
    """workstation -> jump host -> server in network namespaces, an sshd in each."""
    topo = build_topology(unique_prefix("tb"))
    bench._global.callback(teardown_topology, topo)
    jump = start_sshd(
        bench.workdir / "sshd-jump",
        users=[BENCH_USER],
        listen=topo.jump_address,
        netns=topo.jump_ns,
        client_key=bench.server.client_key,
    )
    bench._global.callback(stop_sshd, jump)
    far = start_sshd(
        bench.workdir / "sshd-far",
        users=[BARE_USER],
        listen=topo.server_address,
        netns=topo.server_ns,
        client_key=bench.server.client_key,
    )
    bench._global.callback(stop_sshd, far)
    remote = Remote(topology=topo, jump_host="tb-jump", far_bare_host="tb-far-bare")
    bench.add_hosts(
        host_entry(jump, remote.jump_host, user=BENCH_USER),
        host_entry(far, remote.far_bare_host, user=BARE_USER, proxy_jump="tb-jump"),
    )
    bench.profile(remote.jump_host, env=str(bench.env))
    bench.profile(remote.far_bare_host)
    return remote
