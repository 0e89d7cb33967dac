"""The demo's throwaway sshd (:mod:`jupyter_tether.demo_sshd`), also inside a namespace."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jupyter_tether.demo_client import (
    HostEntry,
    host_entry,
    known_hosts_name,
    ssh_config_text,
    write_ssh_config,
)
from jupyter_tether.demo_sshd import (
    SshServer,
    find_sshd,
    free_port,
    generate_key,
    sshd_config_text,
    stop_sshd,
)
from jupyter_tether.demo_sshd import start_sshd as _start_sshd
from jupyter_tether.proc import run
from testing._run import require_root
from testing.netns import exec_argv

__all__ = [
    "HostEntry",
    "SshServer",
    "find_sshd",
    "free_port",
    "generate_key",
    "host_entry",
    "known_hosts_name",
    "ssh_config_text",
    "sshd_config_text",
    "start_sshd",
    "stop_sshd",
    "write_ssh_config",
]


def start_sshd(
    workdir: Path,
    *,
    users: Sequence[str],
    listen: str = "127.0.0.1",
    port: int | None = None,
    netns: str | None = None,
    extra_config: Sequence[str] = (),
    client_key: Path | None = None,
    inside: Sequence[str] | None = None,
) -> SshServer:
    """:func:`jupyter_tether.demo_sshd.start_sshd`, or with ``netns`` inside that
    network namespace (``ip netns exec``; root only), on port 22 unless told: all the
    namespace's ports are ours. ``inside`` replaces ``ip netns exec`` with another
    argv prefix that enters the namespace (an ``nsenter`` that also enters a mount
    namespace, say)."""
    if netns is None:
        return _start_sshd(
            workdir,
            users=users,
            listen=listen,
            port=port,
            extra_config=extra_config,
            client_key=client_key,
        )
    require_root("running sshd in a network namespace")
    if inside is None:
        inside = exec_argv(netns)
    prefix = list(inside)

    def answers(server: SshServer) -> bool:
        # The address may be unreachable from here (that is the point of a namespace),
        # so ask from inside: ssh-keyscan also checks that the key exchange completes.
        scan = ["ssh-keyscan", "-T", "2", "-t", "ed25519", "-p", str(server.port), server.address]
        result = run([*prefix, *scan], timeout=10, stdin_devnull=True)
        return result.ok and server.host_public_key in result.stdout

    return _start_sshd(
        workdir,
        users=users,
        listen=listen,
        port=port if port is not None else 22,
        extra_config=extra_config,
        client_key=client_key,
        argv_prefix=prefix,
        answers=answers,
    )
