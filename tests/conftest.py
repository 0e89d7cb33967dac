"""Shared fixtures: real SSH servers, accounts and a Jupyter environment on this machine.

Sections (add new fixtures to the section they belong to, or a new section):

1. Markers and collection
2. Session work directory
3. Accounts and running commands as them
4. The Jupyter environment on the "server"
5. SSH servers and the sandbox ssh config
5b. The provisioning account (``tether-prov``, alias ``tt-prov``) and its download cache
6. Per-test tool directories

Everything the suite starts lives in one session directory under /tmp (kept after the
run when ``JUPYTER_TETHER_KEEP_SANDBOX=1``). As root the "remote" account is a real
non-root account (``tether-test``); as an ordinary user it is that user, whose real home
then plays the server's home (the Jupyter environment goes to ``~/jlab``).

All sandbox hosts share ONE ssh config file, ``sandbox_ssh_config.path``: ``tt-server``
and ``tt-other`` (fixture ``sshd``), ``tt-jump`` and ``tt-far`` (fixture ``topology``).
Each fixture adds its aliases when it starts, so use the alias only together with the
fixture that provides it. ``JUPYTER_TETHER_SSH_CONFIG`` points at it in every test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jupyter_tether.errors import TetherError
from jupyter_tether.proc import terminate
from testing.accounts import ensure_user
from testing.envs import make_jupyter_env
from testing.helpers.cli import Tether
from testing.helpers.lock import exclusive
from testing.helpers.ssh import kill_masters
from testing.helpers.users import current_user, home_of
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
from tests.helpers import kill_supervisors

IS_ROOT = os.geteuid() == 0
REMOTE_USER = "tether-test"
OTHER_USER = "tether-other"
PROV_USER = "tether-prov"  # a fresh account for provisioning (see prov_user)

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


# --------------------------------------------------------------------------- 1. markers

# Tests that use these fixtures get the marker automatically, so that
# `pytest -m "not e2e and not netns"` stays fast without every test repeating it.
_FIXTURE_MARKERS = {
    "sshd": "e2e",
    "jupyter_env": "e2e",
    "plot_env": "e2e",
    "prov_sshd": "e2e",
    "topology": "netns",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixturenames = getattr(item, "fixturenames", ())
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in fixturenames:
                item.add_marker(getattr(pytest.mark, marker))


# --------------------------------------------------------------------------- 2. work dir


@pytest.fixture(scope="session")
def one_suite_at_a_time() -> Iterator[None]:
    """Test runs on one machine share the test accounts, their homes and server names:
    two at once would shut down each other's servers. Queue them (bounded). Fixtures
    that touch the accounts or run the CLI depend on this; pure unit tests don't wait."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(
                exclusive(
                    Path("/tmp/jupyter-tether-tests.lock"),
                    timeout=3600,
                    busy="another test run has held the suite lock for an hour",
                )
            )
        except TetherError as exc:
            pytest.exit(exc.message, 3)
        yield


@pytest.fixture(scope="session")
def sandbox_dir() -> Iterator[Path]:
    """A short session directory under /tmp, searchable (0711) by the test accounts,
    since sshd reads their authorized keys from it with their uid."""
    path = Path(tempfile.mkdtemp(prefix="tts-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    if os.environ.get("JUPYTER_TETHER_KEEP_SANDBOX") != "1":
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- 3. accounts


@pytest.fixture(scope="session")
def remote_user(one_suite_at_a_time: None) -> str:
    """Name of the account the sandbox servers log in: ``tether-test`` as root, else you."""
    if IS_ROOT:
        return ensure_user(REMOTE_USER).pw_name
    return current_user()


@pytest.fixture(scope="session")
def other_user(one_suite_at_a_time: None) -> str:
    """A second account on the same servers (``tether-other``); root only."""
    if not IS_ROOT:
        pytest.skip("a second account needs root")
    return ensure_user(OTHER_USER).pw_name


# --------------------------------------------------------------------------- 4. Jupyter


@pytest.fixture(scope="session")
def jupyter_env(remote_user: str) -> Path:
    """A venv with JupyterLab at ``~remote_user/jlab``, owned by remote_user (cached)."""
    return make_jupyter_env(remote_user, home_of(remote_user) / "jlab")


@pytest.fixture(scope="session")
def plot_env(remote_user: str) -> Path:
    """Like ``jupyter_env``, plus matplotlib, at ``~remote_user/jlab-plot`` (cached)."""
    return make_jupyter_env(
        remote_user,
        home_of(remote_user) / "jlab-plot",
        packages=("jupyterlab", "ipykernel", "matplotlib"),
    )


# --------------------------------------------------------------------------- 5. sshd


@dataclass
class SandboxSshConfig:
    """The one ssh config file of the session; fixtures add their hosts to it."""

    path: Path
    entries: dict[str, HostEntry] = field(default_factory=dict)

    def add(self, *entries: HostEntry) -> None:
        for entry in entries:
            self.entries[entry.alias] = entry
        write_ssh_config(self.path, list(self.entries.values()))

    def ssh(
        self, host: str, *command: str, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """``ssh -F <config> host command...`` from this process's account."""
        return subprocess.run(
            ["ssh", "-F", str(self.path), host, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )


@pytest.fixture(scope="session")
def sandbox_ssh_config(sandbox_dir: Path) -> SandboxSshConfig:
    """The session's ssh config (empty until ``sshd`` or ``topology`` add hosts)."""
    config = SandboxSshConfig(sandbox_dir / "ssh" / "config")
    config.add()
    return config


@pytest.fixture(scope="session")
def client_key(sandbox_dir: Path) -> Path:
    """The private key every sandbox server accepts for every sandbox user."""
    return generate_key(sandbox_dir / "ssh" / "id_ed25519", comment="tether-test-client")


@dataclass(frozen=True)
class LocalSshd:
    server: SshServer
    ssh_config: SandboxSshConfig
    user: str
    other_user: str | None  # None when not root
    host: str = "tt-server"
    other_host: str | None = "tt-other"


@pytest.fixture(scope="session")
def sshd(
    sandbox_dir: Path,
    sandbox_ssh_config: SandboxSshConfig,
    client_key: Path,
    remote_user: str,
) -> Iterator[LocalSshd]:
    """A real sshd on 127.0.0.1: alias ``tt-server`` logs in remote_user and, as root,
    ``tt-other`` logs in ``tether-other``."""
    other = ensure_user(OTHER_USER).pw_name if IS_ROOT else None
    users = [remote_user] if other is None else [remote_user, other]
    server = start_sshd(sandbox_dir / "sshd", users=users, client_key=client_key)
    try:
        sandbox_ssh_config.add(host_entry(server, "tt-server", user=remote_user))
        if other is not None:
            sandbox_ssh_config.add(host_entry(server, "tt-other", user=other))
        yield LocalSshd(
            server=server,
            ssh_config=sandbox_ssh_config,
            user=remote_user,
            other_user=other,
            other_host="tt-other" if other else None,
        )
    finally:
        stop_sshd(server)


@dataclass(frozen=True)
class SandboxTopology:
    topology: Topology
    jump: SshServer
    far: SshServer
    ssh_config: SandboxSshConfig
    user: str
    jump_host: str = "tt-jump"
    far_host: str = "tt-far"


@pytest.fixture(scope="session")
def topology(
    sandbox_dir: Path,
    sandbox_ssh_config: SandboxSshConfig,
    client_key: Path,
    remote_user: str,
) -> Iterator[SandboxTopology]:
    """workstation -> jump host -> server in network namespaces (root only), with an
    sshd on port 22 of each: alias ``tt-jump``, and ``tt-far`` (``ProxyJump tt-jump``),
    both logging in remote_user. Only the jump host is reachable from here."""
    if not IS_ROOT:
        pytest.skip("network namespaces need root")
    topo = build_topology(unique_prefix())
    servers: list[SshServer] = []
    try:
        for name, ns, address in (
            ("jump", topo.jump_ns, topo.jump_address),
            ("far", topo.server_ns, topo.server_address),
        ):
            servers.append(
                start_sshd(
                    sandbox_dir / f"sshd-{name}",
                    users=[remote_user],
                    listen=address,
                    netns=ns,
                    client_key=client_key,
                )
            )
        jump, far = servers
        sandbox_ssh_config.add(
            host_entry(jump, "tt-jump", user=remote_user),
            host_entry(far, "tt-far", user=remote_user, proxy_jump="tt-jump"),
        )
        yield SandboxTopology(
            topology=topo, jump=jump, far=far, ssh_config=sandbox_ssh_config, user=remote_user
        )
    finally:
        for server in servers:
            stop_sshd(server)
        teardown_topology(topo)


# --------------------------------------------------------------------------- 5b. provisioning


@pytest.fixture(scope="session")
def prov_user(one_suite_at_a_time: None) -> str:
    """A fresh account with only the system python3 (``tether-prov``; root only): whatever
    an earlier session provisioned is removed first."""
    if not IS_ROOT:
        pytest.skip("a fresh account needs root")
    return fresh_prov_account()


def fresh_prov_account() -> str:
    """``tether-prov`` as if new (root only): its processes ended, what tether left in
    its home and /tmp removed. Tests that provision it beside the provisioning tests
    call it again when they are done, so those still find a fresh account."""
    pw = ensure_user(PROV_USER)
    home = Path(pw.pw_dir)
    # Servers an interrupted session left running (this account is the tests' own).
    listing = subprocess.run(
        ["ps", "-u", PROV_USER, "-o", "pid="], capture_output=True, text=True, check=False
    )
    pids = [int(p) for p in listing.stdout.split()]
    if pids:
        terminate(pids)
    shutil.rmtree(f"/tmp/jupyter-tether-{pw.pw_uid}", ignore_errors=True)
    data = home / ".local/share/jupyter-tether"
    for mount in (data / "envs" / ".incoming", data):  # left by an interrupted session
        if os.path.ismount(mount):
            subprocess.run(["umount", "-l", str(mount)], check=False)
    subs = (
        ".local/share/jupyter-tether",
        ".local/state/jupyter-tether",
        ".cache",
        ".tether-develop",
    )
    for sub in subs:
        shutil.rmtree(home / sub, ignore_errors=True)
    return pw.pw_name


@pytest.fixture(scope="module")
def prov_left_fresh() -> Iterator[None]:
    """For a module whose tests provision tether-prov beside test_provision_e2e.py: the
    account is made fresh again when the module ends, as those tests expect it."""
    yield
    if IS_ROOT:
        fresh_prov_account()


@pytest.fixture
def ptether(tether: Tether, prov_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tether]:
    """The CLI with the session's download cache (shared by the provisioning tests); the
    servers of its profiles are taken down afterwards."""
    monkeypatch.setenv("JUPYTER_TETHER_CACHE_DIR", str(prov_cache))
    yield tether
    for name in list(tether.profiles):
        tether("down", name)


@pytest.fixture(scope="session")
def prov_sshd(
    sandbox_dir: Path, sandbox_ssh_config: SandboxSshConfig, client_key: Path, prov_user: str
) -> Iterator[str]:
    """An sshd of its own for ``tether-prov``: yields its alias, ``tt-prov``."""
    server = start_sshd(sandbox_dir / "sshd-prov", users=[prov_user], client_key=client_key)
    try:
        sandbox_ssh_config.add(host_entry(server, "tt-prov", user=prov_user))
        yield "tt-prov"
    finally:
        stop_sshd(server)


@pytest.fixture(scope="session")
def prov_cache(sandbox_dir: Path) -> Path:
    """One workstation download cache (uv, wheels) for the session's provisioning tests."""
    path = sandbox_dir / "prov-cache"
    path.mkdir(exist_ok=True)
    return path


# --------------------------------------------------------------------------- 6. tool dirs


@pytest.fixture(autouse=True)
def tether_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox_ssh_config: SandboxSshConfig
) -> Iterator[Path]:
    """Point every local directory of the tool into this test's tmp_path (the runtime
    dir, which holds ssh control sockets, into a short /tmp dir instead) and its ssh
    config at the sandbox's. Yields the tmp_path."""
    runtime = Path(tempfile.mkdtemp(prefix="ttr-", dir="/tmp"))
    monkeypatch.setenv("JUPYTER_TETHER_CONFIG", str(tmp_path / "config" / "config.toml"))
    monkeypatch.setenv("JUPYTER_TETHER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("JUPYTER_TETHER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("JUPYTER_TETHER_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("JUPYTER_TETHER_SSH_CONFIG", str(sandbox_ssh_config.path))
    yield tmp_path
    shutil.rmtree(runtime, ignore_errors=True)


# --------------------------------------------------------------------------- 7. the CLI


@pytest.fixture
def tether(tether_home: Path, one_suite_at_a_time: None) -> Iterator[Tether]:
    """Runs ``tether ...`` in-process (``tether("up", "tt-server")``) and writes profiles
    (``tether.profile("tt-server", env=...)``). Ends the ssh masters the test left."""
    yield Tether(Path(os.environ["JUPYTER_TETHER_CONFIG"]))
    kill_supervisors(Path(os.environ["JUPYTER_TETHER_STATE_DIR"]))
    kill_masters(Path(os.environ["JUPYTER_TETHER_RUNTIME_DIR"]))
