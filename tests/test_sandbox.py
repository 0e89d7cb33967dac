"""The sandbox machinery itself: real sshd, accounts, Jupyter env, namespaces."""

from __future__ import annotations

import dataclasses
import os
import pwd
import socket
import subprocess
import time
from pathlib import Path

import pytest

from jupyter_tether.errors import TetherError
from testing import netns
from testing.accounts import ensure_user
from testing.envs import make_jupyter_env
from testing.helpers.users import as_user, home_of
from testing.sshd import (
    HostEntry,
    free_port,
    generate_key,
    host_entry,
    known_hosts_name,
    sshd_config_text,
    start_sshd,
    stop_sshd,
    write_ssh_config,
)
from tests.conftest import LocalSshd, SandboxSshConfig, SandboxTopology, needs_root

# --------------------------------------------------------------------------- pure logic


def test_known_hosts_name_is_bare_on_port_22() -> None:
    # ssh looks up "[host]:port" only for non-default ports.
    assert known_hosts_name("198.18.1.2", 22) == "198.18.1.2"
    assert known_hosts_name("127.0.0.1", 2222) == "[127.0.0.1]:2222"


def test_ssh_config_pins_keys_and_never_prompts(tmp_path: Path) -> None:
    entries = [
        HostEntry("a", "127.0.0.1", 2200, "u", tmp_path / "k", host_public_key="ssh-ed25519 AAAA1"),
        HostEntry(
            "b",
            "198.18.1.2",
            22,
            "u",
            tmp_path / "k",
            proxy_jump="a",
            host_public_key="ssh-ed25519 AAAA2",
        ),
    ]
    config = write_ssh_config(tmp_path / "cfg", entries)

    text = config.read_text()
    for option in (
        "IdentitiesOnly yes",
        f"UserKnownHostsFile {tmp_path / 'known_hosts'}",
        "StrictHostKeyChecking yes",
        "BatchMode yes",
        "ConnectTimeout 5",
    ):
        assert text.count(option) == 2, option
    assert "ProxyJump a" in text.split("Host b", 1)[1]
    assert (tmp_path / "known_hosts").read_text().splitlines() == [
        "198.18.1.2 ssh-ed25519 AAAA2",
        "[127.0.0.1]:2200 ssh-ed25519 AAAA1",
    ]
    assert config.stat().st_mode & 0o777 == 0o600


def test_sshd_config_extra_lines_override_defaults(tmp_path: Path) -> None:
    text = sshd_config_text(
        workdir=tmp_path,
        host_key=tmp_path / "hk",
        users=["u"],
        listen="127.0.0.1",
        port=2200,
        extra_config=["AllowTcpForwarding no", "Match User u", "    PermitTTY no"],
    )
    lines = text.splitlines()
    # sshd keeps the first value it reads, so the override must come before the default.
    assert lines.index("AllowTcpForwarding no") < lines.index("AllowTcpForwarding yes")
    assert lines[-2:] == ["Match User u", "    PermitTTY no"]
    assert f"AuthorizedKeysFile {tmp_path}/authorized_keys/%u" in lines
    assert "UsePAM no" in lines


def test_slot_zero_uses_the_documented_addresses() -> None:
    assert netns._slot_addresses(0) == ("198.18.0.1", "198.18.0.2", "198.18.1.1", "198.18.1.2")


@pytest.mark.parametrize("prefix", ["", "Upper", "a-b", "waytoolongprefix"])
def test_bad_namespace_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(TetherError, match="prefix"):
        netns.build_topology(prefix)


def test_unique_prefix_is_valid() -> None:
    netns._check_prefix(netns.unique_prefix())


def test_start_sshd_refuses_unknown_account(tmp_path: Path) -> None:
    with pytest.raises(TetherError, match="no such account"):
        start_sshd(tmp_path, users=["no-such-user-tt"])


# --------------------------------------------------------------------------- accounts


@pytest.mark.e2e
@needs_root
def test_ensure_user_is_idempotent_and_unlocked() -> None:
    first = ensure_user("tether-test")
    second = ensure_user("tether-test")
    assert first.pw_uid == second.pw_uid != 0
    assert Path(second.pw_dir).is_dir()
    shadow = {
        line.split(":")[0]: line.split(":")[1]
        for line in Path("/etc/shadow").read_text().splitlines()
    }
    assert shadow["tether-test"] == "*"
    groups = subprocess.run(
        ["id", "-nG", "tether-test"], capture_output=True, text=True, check=True
    )
    assert "sudo" not in groups.stdout.split()


# --------------------------------------------------------------------------- sshd


@pytest.mark.e2e
def test_ssh_logs_in_as_the_remote_user(sshd: LocalSshd, remote_user: str) -> None:
    result = sshd.ssh_config.ssh(sshd.host, "id", "-un")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == remote_user


@pytest.mark.e2e
@needs_root
def test_remote_user_is_not_root(sshd: LocalSshd) -> None:
    result = sshd.ssh_config.ssh(sshd.host, "id", "-u")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() not in ("", "0")


@pytest.mark.e2e
@needs_root
def test_other_alias_logs_in_the_other_user(sshd: LocalSshd, other_user: str) -> None:
    assert sshd.other_host is not None
    result = sshd.ssh_config.ssh(sshd.other_host, "id", "-un")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == other_user


@pytest.mark.e2e
def test_forwarding_to_a_remote_unix_socket_works(sshd: LocalSshd) -> None:
    """AllowStreamLocalForwarding: -L from a local port to a Unix socket on the server."""
    # (ssh -W /path, by contrast, opens no channel at all with OpenSSH 9.2: it just hangs.)
    sock_path = Path(f"/tmp/tt-fwd-{os.getpid()}.sock")
    port = free_port()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    forward = [f"-L127.0.0.1:{port}:{sock_path}", "-N", "-oExitOnForwardFailure=yes"]
    client = None
    try:
        listener.bind(str(sock_path))
        sock_path.chmod(0o777)  # the remote user, not necessarily us, connects to it
        listener.listen(1)
        listener.settimeout(10)
        client = subprocess.Popen(
            ["ssh", "-F", str(sshd.ssh_config.path), *forward, sshd.host],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        local = _connect_until(("127.0.0.1", port), deadline=time.monotonic() + 10)
        with local, listener.accept()[0] as remote_end:
            remote_end.sendall(b"hello\n")
            local.settimeout(10)
            assert local.recv(6) == b"hello\n"
    finally:
        if client is not None:
            client.kill()
            client.wait(timeout=10)
        listener.close()
        sock_path.unlink(missing_ok=True)


def _connect_until(address: tuple[str, int], *, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection(address, timeout=2)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.e2e
def test_a_wrong_host_key_is_refused(sshd: LocalSshd, tmp_path: Path) -> None:
    generate_key(tmp_path / "other_host_key", comment="not the server's")
    pub = " ".join((tmp_path / "other_host_key.pub").read_text().split()[:2])
    entry = host_entry(sshd.server, "wrong", user=sshd.user)
    config = write_ssh_config(tmp_path / "cfg", [dataclasses.replace(entry, host_public_key=pub)])
    result = SandboxSshConfig(config).ssh("wrong", "true")
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


@pytest.mark.e2e
def test_stop_sshd_ends_the_server_and_its_sessions(
    tmp_path_factory: pytest.TempPathFactory, client_key: Path
) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    workdir = tmp_path_factory.mktemp("sshd")
    server = start_sshd(workdir, users=[me], client_key=client_key)
    try:
        config = write_ssh_config(workdir / "cfg", [host_entry(server, "s", user=me)])
        session = subprocess.Popen(
            ["ssh", "-F", str(config), "s", "echo started; sleep 120"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert session.stdout is not None
        assert session.stdout.readline() == "started\n"
    finally:
        stop_sshd(server)
    try:
        assert session.wait(timeout=15) != 0
    finally:
        session.kill()
    assert not _tcp_connects(server.address, server.port)
    assert not Path(f"/proc/{server.pid}").exists()
    stop_sshd(server)  # a second stop is harmless


# --------------------------------------------------------------------------- Jupyter env


@pytest.mark.e2e
def test_jupyter_env_runs_as_the_remote_user(jupyter_env: Path, remote_user: str) -> None:
    result = as_user(remote_user, [str(jupyter_env / "bin" / "jupyter"), "lab", "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()[0].isdigit()
    assert jupyter_env.stat().st_uid == pwd.getpwnam(remote_user).pw_uid
    assert jupyter_env.parent == home_of(remote_user)


@pytest.mark.e2e
def test_jupyter_env_leaves_no_uv_for_the_user(jupyter_env: Path, remote_user: str) -> None:
    assert not (jupyter_env / "bin" / "uv").exists()
    result = as_user(remote_user, ["sh", "-c", "command -v uv || echo none"])
    assert result.stdout.strip() == "none"


def test_make_jupyter_env_refuses_to_replace_a_non_venv(tmp_path: Path) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    precious = tmp_path / "jlab"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    with pytest.raises(TetherError, match="not a virtual environment"):
        make_jupyter_env(me, precious)
    assert (precious / "notes.txt").read_text() == "mine"


@pytest.mark.e2e
def test_jupyter_env_second_call_is_quick(jupyter_env: Path, remote_user: str) -> None:
    start = time.monotonic()
    assert make_jupyter_env(remote_user, jupyter_env) == jupyter_env
    assert time.monotonic() - start < 2


@pytest.mark.e2e
def test_jupyter_env_works_over_ssh(jupyter_env: Path, sshd: LocalSshd) -> None:
    result = sshd.ssh_config.ssh(sshd.host, f"{jupyter_env}/bin/jupyter lab --version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()[0].isdigit()


# --------------------------------------------------------------------------- namespaces


def _tcp_connects(address: str, port: int, timeout: float = 2) -> bool:
    try:
        socket.create_connection((address, port), timeout=timeout).close()
    except OSError:
        return False
    return True


@pytest.mark.netns
def test_far_server_is_reached_through_the_jump_host(topology: SandboxTopology) -> None:
    result = topology.ssh_config.ssh(topology.far_host, "echo $SSH_CONNECTION; id -un")
    assert result.returncode == 0, result.stderr
    connection, user = result.stdout.split("\n")[:2]
    client_address, _, server_address, server_port = connection.split()
    # The connection arrives from the jump host's inner address, at the far server.
    assert client_address == topology.topology.jump_inner_address
    assert (server_address, server_port) == (topology.topology.server_address, "22")
    assert user == topology.user


@pytest.mark.netns
def test_far_server_is_not_reachable_directly(topology: SandboxTopology) -> None:
    assert _tcp_connects(topology.topology.jump_address, 22)
    assert not _tcp_connects(topology.topology.server_address, 22)


@pytest.mark.netns
def test_jump_host_does_not_forward(topology: SandboxTopology) -> None:
    result = subprocess.run(
        ["ip", "netns", "exec", topology.topology.jump_ns, "cat", "/proc/sys/net/ipv4/ip_forward"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "0"


@pytest.mark.netns
def test_cut_and_restore(topology: SandboxTopology) -> None:
    topo = topology.topology
    topo.cut()
    try:
        assert not _tcp_connects(topo.jump_address, 22)
        result = topology.ssh_config.ssh(topology.jump_host, "true", timeout=20)
        assert result.returncode == 255
    finally:
        topo.restore()
    deadline = time.monotonic() + 15
    while True:
        result = topology.ssh_config.ssh(topology.jump_host, "true", timeout=20)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result.returncode == 0, result.stderr
    assert topology.ssh_config.ssh(topology.far_host, "true").returncode == 0


@needs_root
@pytest.mark.netns
def test_teardown_removes_everything_and_is_idempotent() -> None:
    prefix = netns.unique_prefix("tx")
    topo = netns.build_topology(prefix)
    assert Path("/sys/class/net", topo.host_if).exists()
    netns.teardown_topology(topo)
    netns.teardown_topology(topo)
    assert not Path("/sys/class/net", topo.host_if).exists()
    assert not Path("/run/netns", topo.jump_ns).exists()
    assert not Path("/run/netns", topo.server_ns).exists()
