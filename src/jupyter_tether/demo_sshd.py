"""Throwaway SSH servers on this machine: ``tether demo``'s, and the test suite's.

Everything here is real OpenSSH: :func:`start_sshd` runs the system's ``sshd`` with a
config, host key and authorized keys of its own in a work directory, so nothing in
``/etc/ssh`` or anybody's ``~/.ssh`` is read or changed. ``demo_client.py``
writes a matching client config (``ssh -F``) with the servers' host keys pinned.

As root, sshd can serve several existing accounts (root too). As an ordinary user,
sshd runs as that user and can only log that same user in (it cannot switch uid); it
cannot allocate ptys either.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_tether.errors import TetherError
from jupyter_tether.proc import descendants, run, terminate

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd", "/usr/bin/sshd")
# sshd's privilege separation directory (Debian's path); sshd refuses to start as
# root without it, and only the packaged service (systemd-tmpfiles) would create it.
PRIVSEP_DIR = Path("/run/sshd")

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
POLL = 0.05


def _is_root() -> bool:
    return os.geteuid() == 0


def _must(argv: Sequence[str], what: str) -> None:
    """Run a short command that must succeed."""
    result = run(argv, timeout=30, stdin_devnull=True)
    if not result.ok:
        raise TetherError(
            f"{what} failed (exit {result.returncode}): {' '.join(result.argv)}",
            details=(result.stderr or result.stdout).strip()[-2000:] or None,
        )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- sshd


@dataclass(frozen=True)
class SshServer:
    """A running sshd started by :func:`start_sshd`."""

    address: str
    port: int
    pid: int
    host_public_key: str  # "ssh-ed25519 AAAA..." without a comment
    workdir: Path
    client_key: Path  # private key that every served user accepts
    log: Path
    config: Path
    users: tuple[str, ...]
    process: subprocess.Popen[bytes] | None = field(default=None, compare=False, repr=False)


def find_sshd() -> str:
    """Return the path of the OpenSSH server binary, or say how to install it."""
    for candidate in SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("sshd")
    if found:
        # sshd re-executes itself and insists on an absolute path.
        return str(Path(found).resolve())
    raise TetherError(
        "the OpenSSH server (sshd) is not installed",
        hint="apt install openssh-server",
    )


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``address`` right now (someone may take it later)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def generate_key(path: Path, *, comment: str) -> Path:
    """Create an unencrypted ed25519 key pair at ``path`` (and ``path.pub``) if absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
        _must(keygen, "ssh-keygen")
    return path


def _public_key(path: Path) -> str:
    """``type base64`` of ``path.pub``, without its comment."""
    parts = Path(f"{path}.pub").read_text().split()
    return f"{parts[0]} {parts[1]}"


def _split_extra(extra: Sequence[str]) -> tuple[list[str], list[str]]:
    """Extra lines before the first ``Match`` go first (the first value of a keyword wins
    in sshd_config, so they override the defaults); ``Match`` blocks must go last."""
    for i, line in enumerate(extra):
        if line.strip().lower().startswith("match "):
            return list(extra[:i]), list(extra[i:])
    return list(extra), []


def sshd_config_text(
    *,
    workdir: Path,
    host_key: Path,
    users: Sequence[str],
    listen: str,
    port: int,
    extra_config: Sequence[str] = (),
) -> str:
    """The sshd_config for a sandbox server (pure; :func:`start_sshd` writes it)."""
    head, tail = _split_extra(extra_config)
    lines = [
        "# Written by jupyter-tether's sandbox: a throwaway sshd for tests and demos.",
        *head,
        f"ListenAddress {listen}:{port}"
        if ":" not in listen
        else f"ListenAddress [{listen}]:{port}",
        f"HostKey {host_key}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}/%u",
        f"AllowUsers {' '.join(users)}",
        # Without PAM, sshd itself judges the account: a password field of "!" counts as
        # locked, "*" does not.
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        # The work directory lives in /tmp and is owned by whoever started the server.
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "AllowTcpForwarding yes",
        "AllowStreamLocalForwarding yes",
        "GatewayPorts no",
        "X11Forwarding no",
        "PrintMotd no",
        "UseDNS no",
        "MaxSessions 64",
        "MaxStartups 100:30:200",
        "LogLevel VERBOSE",
        # scp speaks SFTP since OpenSSH 9.0, so file copies need the subsystem.
        "Subsystem sftp internal-sftp",
        *tail,
    ]
    return "\n".join(lines) + "\n"


def _check_traversable(path: Path) -> None:
    """sshd opens ``AuthorizedKeysFile`` with the logging-in user's uid (auth2-pubkey.c
    ``temporarily_use_uid``), so every directory above the keys must be searchable by
    other users when root serves non-root accounts."""
    for parent in [path, *path.parents]:
        if not parent.stat().st_mode & 0o001:
            raise TetherError(
                f"{parent} is not searchable by other users, so sshd cannot read the "
                "authorized keys below it as the logging-in user",
                hint=f"use a work directory under /tmp, or chmod o+x {parent}",
            )


def start_sshd(
    workdir: Path,
    *,
    users: Sequence[str],
    listen: str = "127.0.0.1",
    port: int | None = None,
    extra_config: Sequence[str] = (),
    client_key: Path | None = None,
    argv_prefix: Sequence[str] = (),
    answers: Callable[[SshServer], bool] | None = None,
) -> SshServer:
    """Start an sshd that lets ``users`` in with one client key, and wait until it answers.

    ``workdir`` receives the host key, the client key (unless ``client_key`` is given),
    ``sshd_config``, ``authorized_keys/<user>`` and ``sshd.log``. The port is a free one
    when not given. ``argv_prefix`` goes before sshd's argv (a command that runs it
    somewhere else); ``answers`` then replaces the check that it greets on
    ``listen:port`` from here.

    As root any existing account can be served (root too: ``PermitRootLogin
    prohibit-password``). As another user sshd runs unprivileged and can only log in
    that same user, so ``users`` must be exactly the current user.
    """
    sshd = find_sshd()
    users = tuple(users)
    if not users:
        raise TetherError("start_sshd needs at least one user to serve")
    for user in users:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise TetherError(f"no such account: {user}") from None
    if not _is_root():
        me = pwd.getpwuid(os.getuid()).pw_name
        if set(users) != {me}:
            raise TetherError(
                f"an unprivileged sshd can only log in its own user ({me}), not {', '.join(users)}",
                hint="run as root to serve other accounts",
            )

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if _is_root() and any(u != "root" for u in users):
        workdir.chmod(0o711)
        _check_traversable(workdir)
    host_key = generate_key(workdir / "ssh_host_ed25519_key", comment="tether-sandbox-host")
    if client_key is None:
        client_key = generate_key(workdir / "client_ed25519", comment="tether-sandbox-client")
    client_pub = Path(f"{client_key}.pub").read_text().strip()
    keys_dir = workdir / "authorized_keys"
    keys_dir.mkdir(exist_ok=True)
    keys_dir.chmod(0o755)
    for user in users:
        keyfile = keys_dir / user
        keyfile.write_text(client_pub + "\n")
        keyfile.chmod(0o644)

    if _is_root() and not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)

    config = workdir / "sshd_config"
    log = workdir / "sshd.log"
    chosen = port if port is not None else free_port(listen)
    # A port we picked can be taken before sshd binds it; then pick another, a few times.
    for attempt in range(5):
        config.write_text(
            sshd_config_text(
                workdir=workdir,
                host_key=host_key,
                users=users,
                listen=listen,
                port=chosen,
                extra_config=extra_config,
            )
        )
        _must([sshd, "-t", "-f", str(config)], "checking the sshd config")
        log.write_text("")
        argv = [*argv_prefix, sshd, "-D", "-f", str(config), "-E", str(log)]
        process = subprocess.Popen(  # the server outlives this call: see stop_sshd
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        server = SshServer(
            address=listen,
            port=chosen,
            pid=process.pid,
            host_public_key=_public_key(host_key),
            workdir=workdir,
            client_key=client_key,
            log=log,
            config=config,
            users=users,
            process=process,
        )
        try:
            _wait_ready(server, process, answers or _answers)
        except TetherError:
            stop_sshd(server)
            busy = "Address already in use" in _tail(log)
            if busy and port is None and attempt < 4:
                chosen = free_port(listen)
                continue
            raise
        return server
    raise AssertionError("unreachable")  # pragma: no cover


def _wait_ready(
    server: SshServer, process: subprocess.Popen[bytes], answers: Callable[[SshServer], bool]
) -> None:
    """Poll until ``server`` sends an SSH banner, or raise with sshd's own log."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise TetherError(
                f"sshd exited with status {process.returncode} while starting",
                details=_tail(server.log),
                hint=f"see {server.log} and {server.config}",
            )
        if answers(server):
            return
        if time.monotonic() > deadline:
            raise TetherError(
                f"sshd did not answer on {server.address}:{server.port} within {START_TIMEOUT:g} s",
                details=_tail(server.log),
                hint=f"see {server.log}",
            )
        time.sleep(POLL)


def _answers(server: SshServer) -> bool:
    """Whether the server accepts a connection and greets with ``SSH-``."""
    try:
        with socket.create_connection((server.address, server.port), timeout=1) as s:
            s.settimeout(2)
            return s.recv(4) == b"SSH-"
    except OSError:
        return False


def stop_sshd(server: SshServer) -> None:
    """Stop the server and the sessions it is serving. Safe to call twice.

    A listening sshd that gets SIGTERM leaves its connections running, so their
    processes are ended too (found by parentage).
    """
    if server.process is not None and server.process.poll() is not None:
        return  # already stopped and reaped: its pid may belong to someone else now
    # Youngest generation first, so that each sshd process is reaped by its parent
    # instead of lingering as a zombie until init collects it; the listener goes last.
    for generation in reversed(descendants(server.pid)):
        terminate(generation)
    terminate([server.pid])
    if server.process is not None:
        # Reap our child; terminate() has made sure it is gone, so this returns at once.
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=STOP_TIMEOUT)
