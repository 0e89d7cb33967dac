"""The ssh client side of the demo's throwaway servers (``demo_sshd.py``): an ``ssh -F``
config with their host keys pinned in a known_hosts of its own."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from jupyter_tether.demo_sshd import SshServer


@dataclass(frozen=True)
class HostEntry:
    """One ``Host`` block of a sandbox ssh config."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_file: Path
    _: KW_ONLY
    proxy_jump: str | None = None
    host_public_key: str | None = None  # pinned in known_hosts when given
    options: tuple[tuple[str, str], ...] = ()  # more "Keyword value" pairs, in order


def host_entry(
    server: SshServer,
    alias: str,
    *,
    user: str,
    proxy_jump: str | None = None,
    options: Sequence[tuple[str, str]] = (),
) -> HostEntry:
    """The :class:`HostEntry` that logs ``user`` in to ``server`` as ``alias``."""
    return HostEntry(
        alias=alias,
        hostname=server.address,
        port=server.port,
        user=user,
        identity_file=server.client_key,
        host_public_key=server.host_public_key,
        proxy_jump=proxy_jump,
        options=tuple(options),
    )


def known_hosts_name(hostname: str, port: int) -> str:
    """How ssh names a host in known_hosts: bare on port 22, ``[host]:port`` otherwise."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def ssh_config_text(entries: Sequence[HostEntry], *, known_hosts: Path) -> str:
    """The client config for ``entries`` (pure; :func:`write_ssh_config` writes it)."""
    blocks = ["# Written by jupyter-tether's sandbox. Use with ssh -F."]
    for e in entries:
        lines = [
            f"Host {e.alias}",
            f"    HostName {e.hostname}",
            f"    Port {e.port}",
            f"    User {e.user}",
            f"    IdentityFile {e.identity_file}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {known_hosts}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    BatchMode yes",
            "    ConnectTimeout 5",
        ]
        if e.proxy_jump:
            lines.append(f"    ProxyJump {e.proxy_jump}")
        lines.extend(f"    {key} {value}" for key, value in e.options)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_ssh_config(
    path: Path, entries: Sequence[HostEntry], *, known_hosts: Path | None = None
) -> Path:
    """Write an ssh client config for ``entries`` and pin their host keys.

    The host keys go to ``known_hosts`` (default: ``known_hosts`` beside ``path``),
    which is rewritten with exactly these entries' keys. Both files are 0600, as ssh
    insists for its config. Returns ``path``.
    """
    known_hosts = known_hosts if known_hosts is not None else path.with_name("known_hosts")
    pinned = sorted(
        {
            f"{known_hosts_name(e.hostname, e.port)} {e.host_public_key}"
            for e in entries
            if e.host_public_key
        }
    )
    _write_0600(known_hosts, "".join(line + "\n" for line in pinned))
    _write_0600(path, ssh_config_text(entries, known_hosts=known_hosts))
    return path


def _write_0600(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    path.chmod(0o600)
