"""Throwaway SSH servers on this machine, for ``tether demo`` and for the test suite.

Everything here is real OpenSSH: :func:`start_sshd` runs the system's ``sshd`` with a
config, host key and authorized keys of its own in a work directory, so nothing in
``/etc/ssh`` or anybody's ``~/.ssh`` is read or changed. :func:`write_ssh_config`
writes a matching client config (``ssh -F``) with the servers' host keys pinned.

Root is needed for some of it, and each function says so:

* As root, sshd can serve several accounts (:func:`ensure_user` makes non-root ones),
  and :func:`build_topology` builds network namespaces that stand for a jump host and
  a server behind it.
* As an ordinary user, sshd runs as that user and can only log that same user in
  (it cannot switch uid); it cannot allocate ptys either.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

from jupyter_tether import paths
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.proc import Result, run

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd", "/usr/bin/sshd")
# sshd's privilege separation directory (Debian's path); sshd refuses to start as
# root without it, and only the packaged service (systemd-tmpfiles) would create it.
PRIVSEP_DIR = Path("/run/sshd")
# Where python3 is looked for to build a Jupyter environment: a default PATH, not the
# caller's, so a root shell's pyenv shims (under /root, unreadable to the test user)
# are never picked.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
ROOT_UV_CACHE = Path("/var/tmp/jupyter-tether-uv-cache")  # noqa: S108 - root-only, persistent
ENV_MARKER = ".tether-sandbox-env"
BLACKHOLE = "198.18.0.0/15"

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
POLL = 0.05


def _is_root() -> bool:
    return os.geteuid() == 0


def _require_root(what: str) -> None:
    if not _is_root():
        raise TetherError(f"{what} needs root", hint="run it as root (sudo), or skip it")


def _check(result: Result, what: str, *, code: ExitCode = ExitCode.ERROR) -> Result:
    """Raise a :class:`TetherError` naming ``what`` and the command when it failed."""
    if not result.ok:
        raise TetherError(
            f"{what} failed (exit {result.returncode}): {' '.join(result.argv)}",
            details=(result.stderr or result.stdout).strip()[-2000:] or None,
            code=code,
        )
    return result


def _must(
    argv: Sequence[str],
    what: str,
    *,
    timeout: float = 30,
    env: dict[str, str] | None = None,
    code: ExitCode = ExitCode.ERROR,
) -> Result:
    """Run a short command that must succeed."""
    return _check(run(argv, timeout=timeout, env=env, stdin_devnull=True), what, code=code)


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
    netns: str | None = None
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
        code=ExitCode.ERROR,
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
        # locked, "*" does not (see ensure_user).
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
    netns: str | None = None,
    extra_config: Sequence[str] = (),
    client_key: Path | None = None,
) -> SshServer:
    """Start an sshd that lets ``users`` in with one client key, and wait until it answers.

    ``workdir`` receives the host key, the client key (unless ``client_key`` is given),
    ``sshd_config``, ``authorized_keys/<user>`` and ``sshd.log``. The port is a free one
    when not given (22 inside a network namespace, whose ports are all ours). With
    ``netns`` the server runs in that namespace (``ip netns exec``), which needs root.

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
        if netns is not None:
            _require_root("running sshd in a network namespace")

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
    chosen = port if port is not None else (22 if netns else free_port(listen))
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
        argv = [sshd, "-D", "-f", str(config), "-E", str(log)]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
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
            netns=netns,
            process=process,
        )
        try:
            _wait_ready(server, process)
        except TetherError:
            stop_sshd(server)
            busy = "Address already in use" in _tail(log)
            if busy and port is None and netns is None and attempt < 4:
                chosen = free_port(listen)
                continue
            raise
        return server
    raise AssertionError("unreachable")  # pragma: no cover


def _wait_ready(server: SshServer, process: subprocess.Popen[bytes]) -> None:
    """Poll until ``server`` sends an SSH banner, or raise with sshd's own log."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise TetherError(
                f"sshd exited with status {process.returncode} while starting",
                details=_tail(server.log),
                hint=f"see {server.log} and {server.config}",
            )
        if _answers(server):
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
    if server.netns is not None:
        # The address may be unreachable from here (that is the point of a namespace),
        # so ask from inside: ssh-keyscan also checks that the key exchange completes.
        scan = ["ssh-keyscan", "-T", "2", "-t", "ed25519", "-p", str(server.port), server.address]
        result = run(["ip", "netns", "exec", server.netns, *scan], timeout=10, stdin_devnull=True)
        return result.ok and server.host_public_key in result.stdout
    try:
        with socket.create_connection((server.address, server.port), timeout=1) as s:
            s.settimeout(2)
            return s.recv(4) == b"SSH-"
    except OSError:
        return False


def _descendants(pid: int) -> list[list[int]]:
    """The descendants of ``pid`` by generation: children, grandchildren, ..."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name in field 2 may contain spaces and parentheses.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    generations: list[list[int]] = []
    current = [pid]
    while current:
        current = [child for parent in current for child in parents.get(parent, [])]
        if current:
            generations.append(current)
    return generations


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers signal 0; it has finished all the same.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def terminate(pids: Sequence[int], *, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM ``pids``, wait until they are gone, SIGKILL what is left (all bounded)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(POLL)
        if not any(_alive(p) for p in pids):
            return


def stop_sshd(server: SshServer) -> None:
    """Stop the server and the sessions it is serving. Safe to call twice.

    A listening sshd that gets SIGTERM leaves its connections running, so their
    processes are ended too (found by parentage).
    """
    if server.process is not None and server.process.poll() is not None:
        return  # already stopped and reaped: its pid may belong to someone else now
    # Youngest generation first, so that each sshd process is reaped by its parent
    # instead of lingering as a zombie until init collects it; the listener goes last.
    for generation in reversed(_descendants(server.pid)):
        terminate(generation)
    terminate([server.pid])
    if server.process is not None:
        # Reap our child; terminate() has made sure it is gone, so this returns at once.
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=STOP_TIMEOUT)


# --------------------------------------------------------------------------- ssh client


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


# --------------------------------------------------------------------------- accounts


def ensure_user(name: str, *, shell: str = "/bin/bash") -> pwd.struct_passwd:
    """Make sure a normal (non-root, no sudo) account ``name`` with a home exists. Root only.

    The password field is set to ``*``: no password can match it, and unlike ``!`` (what
    useradd leaves) sshd without PAM does not treat it as a locked account.
    """
    _require_root("creating accounts")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", name):
        raise TetherError(f"not a usable account name: {name!r}")
    try:
        existing = pwd.getpwnam(name)
    except KeyError:
        useradd = ["useradd", "--create-home", "--shell", shell, "--comment", "tether", name]
        _must(useradd, f"creating account {name}", timeout=60)
    else:
        if existing.pw_uid == 0:
            raise TetherError(f"account {name} has uid 0; refusing to use it as a normal user")
        if not Path(existing.pw_dir).is_dir():
            home = Path(existing.pw_dir)
            home.mkdir(mode=0o750, parents=True)
            os.chown(home, existing.pw_uid, existing.pw_gid)
    _must(["usermod", "--password", "*", name], f"unlocking account {name}", timeout=60)
    return pwd.getpwnam(name)


# --------------------------------------------------------------------------- Jupyter env


def system_python() -> str:
    """The system's python3 (never one under /root, which other users cannot run)."""
    candidates = ["/usr/bin/python3"]
    found = shutil.which("python3", path=SYSTEM_PATH)
    if found:
        candidates.append(found)
    for candidate in candidates:
        real = Path(candidate).resolve()
        if os.access(real, os.X_OK) and not real.is_relative_to("/root"):
            return candidate
    raise TetherError("no system python3 found", hint="apt install python3")


def find_uv() -> str:
    """``uv`` beside the running interpreter (installed as a package) or on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("uv")
    if found:
        return found
    raise TetherError("uv is not installed", hint="pip install uv")


def _env_is_good(path: Path, packages: Sequence[str]) -> bool:
    marker = path / ENV_MARKER
    try:
        recorded = marker.read_text().split()
    except OSError:
        return False
    return recorded == sorted(packages) and os.access(path / "bin" / "python", os.X_OK)


def make_jupyter_env(
    user: str,
    path: Path,
    *,
    packages: Sequence[str] = ("jupyterlab", "ipykernel"),
    uv_cache: Path | None = None,
) -> Path:
    """Build a venv with ``packages`` from PyPI at ``path``, owned by ``user``; return it.

    Built from the system python3 with uv. uv itself stays outside the environment and
    the user's home. Idempotent: an environment built before with the same packages is
    left alone. As root the build runs as root (copying files out of uv's cache rather
    than hard-linking them, so the chown afterwards cannot reach the cache) and is then
    handed to ``user``; the cache is ``/var/tmp/jupyter-tether-uv-cache`` then.
    """
    pw = pwd.getpwnam(user)
    if not _is_root() and pw.pw_uid != os.getuid():
        raise TetherError(f"only root can build an environment for another user ({user})")
    path = Path(path)
    if _env_is_good(path, packages):
        return path
    _make_parents(path, pw)
    # Two test runs at once may both want the environment: build it once.
    with _locked(path.parent):
        return _build_env(path, pw, packages, uv_cache)


def _build_env(
    path: Path, pw: pwd.struct_passwd, packages: Sequence[str], uv_cache: Path | None
) -> Path:
    if _env_is_good(path, packages):
        return path  # built by whoever held the lock before us
    if path.exists():
        if not (path / "pyvenv.cfg").is_file():
            raise TetherError(
                f"{path} exists and is not a virtual environment; refusing to replace it",
                hint="remove it or choose another path",
            )
        shutil.rmtree(path)  # a half-built environment from an interrupted run

    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    if uv_cache is not None:
        env["UV_CACHE_DIR"] = str(uv_cache)
    elif _is_root():
        env["UV_CACHE_DIR"] = str(ROOT_UV_CACHE)
    uv = find_uv()
    venv = [uv, "venv", "--quiet", "--python", system_python(), str(path)]
    # Copies, not hard links into uv's cache: the chown below must not reach the cache.
    install = [uv, "pip", "install", "--quiet", "--link-mode=copy", "--python"]
    try:
        _must(
            venv,
            f"creating a virtual environment at {path}",
            env=env,
            timeout=120,
            code=ExitCode.PROVISION,
        )
        _must(
            [*install, str(path / "bin" / "python"), *packages],
            f"installing {' '.join(packages)}",
            env=env,
            timeout=900,
            code=ExitCode.PROVISION,
        )
        if _is_root() and pw.pw_uid != 0:
            _chown_tree(path, pw.pw_uid, pw.pw_gid)
        # The marker goes last: an environment without it is rebuilt on the next call.
        marker = path / ENV_MARKER
        marker.write_text(" ".join(sorted(packages)) + "\n")
        if _is_root():
            os.chown(marker, pw.pw_uid, pw.pw_gid)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


def _locked(directory: Path, timeout: float = 1200) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive flock on ``directory`` itself (no lock file left behind)."""
    return paths.hold_lock(
        directory,
        timeout=timeout,
        busy=TetherError(f"{directory} stayed locked for {timeout:g} s by another build"),
    )


def _make_parents(path: Path, pw: pwd.struct_passwd) -> None:
    """Create the missing parents of ``path``, owned by the user when inside their home."""
    missing = [p for p in reversed(path.parents) if not p.exists()]
    for parent in missing:
        parent.mkdir()
        if _is_root() and parent.is_relative_to(pw.pw_dir):
            os.chown(parent, pw.pw_uid, pw.pw_gid)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(Path(dirpath) / name, uid, gid, follow_symlinks=False)


# --------------------------------------------------------------------------- namespaces


@dataclass(frozen=True)
class Topology:
    """workstation (this namespace) -- jump host -- server, in two network namespaces.

    The workstation reaches ``jump_address``; only the jump host reaches
    ``server_address``. The jump host does not forward packets, and the blackhole
    route for 198.18.0.0/15 keeps the workstation's packets for the server (or for a
    cut link) on this machine.
    """

    prefix: str
    slot: int
    jump_ns: str
    server_ns: str
    host_if: str  # the workstation's end of the workstation--jump link
    host_address: str
    jump_address: str  # the jump host, as the workstation sees it
    jump_inner_address: str  # the jump host, as the server sees it
    server_address: str

    def cut(self) -> None:
        """Take the workstation--jump link down, as if the network went away."""
        _must(["ip", "link", "set", self.host_if, "down"], "taking the link down")

    def restore(self) -> None:
        """Bring the link back up (after :meth:`cut`) and wait until it carries packets."""
        _must(["ip", "link", "set", self.host_if, "up"], "bringing the link up")
        operstate = Path("/sys/class/net") / self.host_if / "operstate"
        deadline = time.monotonic() + 5
        while operstate.read_text().strip() != "up":
            if time.monotonic() > deadline:
                raise TetherError(f"{self.host_if} did not come up within 5 s")
            time.sleep(POLL)


def unique_prefix(base: str = "tt") -> str:
    """A namespace prefix unique to this process (short enough for interface names)."""
    return f"{base}{os.getpid()}"


def _check_prefix(prefix: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9]{0,11}", prefix):
        raise TetherError(
            f"namespace prefix {prefix!r} must be 1-12 lowercase letters or digits",
            hint="it becomes part of interface names, which are limited to 15 characters",
        )


def _names(prefix: str) -> tuple[str, str, str]:
    return f"{prefix}-jump", f"{prefix}-srv", f"{prefix}-h"


def _slot_addresses(slot: int) -> tuple[str, str, str, str]:
    """host, jump (outer), jump (inner), server addresses of ``slot``; slot 0 is
    198.18.0.1 / 198.18.0.2 / 198.18.1.1 / 198.18.1.2."""
    outer, inner = 2 * slot, 2 * slot + 1
    return f"198.18.{outer}.1", f"198.18.{outer}.2", f"198.18.{inner}.1", f"198.18.{inner}.2"


def _used_slots() -> set[int]:
    out = run(["ip", "-4", "-o", "addr", "show"], timeout=10).stdout
    return {int(m.group(1)) // 2 for m in re.finditer(r"inet 198\.18\.(\d+)\.\d+/", out)}


def ensure_blackhole() -> None:
    """Keep packets for 198.18.0.0/15 on this machine, whatever the links do. Root only."""
    _require_root("adding a blackhole route")
    shown = run(["ip", "route", "show", "type", "blackhole", BLACKHOLE], timeout=10).stdout
    if BLACKHOLE not in shown:
        _must(["ip", "route", "add", "blackhole", BLACKHOLE, "metric", "1000"], "blackhole route")


def build_topology(prefix: str, *, slot: int | None = None) -> Topology:
    """Create namespaces ``<prefix>-jump`` and ``<prefix>-srv`` and link them. Root only.

    ``slot`` picks the addresses (see :func:`_slot_addresses`); by default the first
    slot no interface here uses, so that runs with different prefixes can coexist.
    Leftovers of an earlier run with the same prefix are removed first.
    """
    _check_prefix(prefix)
    _require_root("building network namespaces")
    ensure_blackhole()
    teardown_prefix(prefix)
    if slot is None:
        used = _used_slots()
        slot = next(s for s in range(128) if s not in used)
    jump_ns, server_ns, host_if = _names(prefix)
    host_addr, jump_addr, jump_inner, server_addr = _slot_addresses(slot)
    topology = Topology(
        prefix=prefix,
        slot=slot,
        jump_ns=jump_ns,
        server_ns=server_ns,
        host_if=host_if,
        host_address=host_addr,
        jump_address=jump_addr,
        jump_inner_address=jump_inner,
        server_address=server_addr,
    )
    server_peer = ["peer", "name", "eth0", "netns", server_ns]
    steps = [
        ["ip", "netns", "add", jump_ns],
        ["ip", "netns", "add", server_ns],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", "wan", "netns", jump_ns],
        ["ip", "-n", jump_ns, "link", "add", "lan", "type", "veth", *server_peer],
        ["ip", "addr", "add", f"{host_addr}/30", "dev", host_if],
        ["ip", "-n", jump_ns, "addr", "add", f"{jump_addr}/30", "dev", "wan"],
        ["ip", "-n", jump_ns, "addr", "add", f"{jump_inner}/30", "dev", "lan"],
        ["ip", "-n", server_ns, "addr", "add", f"{server_addr}/30", "dev", "eth0"],
        ["ip", "netns", "exec", jump_ns, "sysctl", "-qw", "net.ipv4.ip_forward=0"],
        ["ip", "-n", jump_ns, "link", "set", "lo", "up"],
        ["ip", "-n", server_ns, "link", "set", "lo", "up"],
        ["ip", "-n", jump_ns, "link", "set", "wan", "up"],
        ["ip", "-n", jump_ns, "link", "set", "lan", "up"],
        ["ip", "-n", server_ns, "link", "set", "eth0", "up"],
        ["ip", "link", "set", host_if, "up"],
    ]
    try:
        for argv in steps:
            _must(argv, "building the topology")
    except BaseException:
        teardown_topology(topology)
        raise
    return topology


def teardown_topology(topology: Topology) -> None:
    """Remove the namespaces, their processes and links. Idempotent."""
    teardown_prefix(topology.prefix)


def teardown_prefix(prefix: str) -> None:
    """Remove whatever :func:`build_topology` made for ``prefix`` (a crashed run's too)."""
    _check_prefix(prefix)
    _require_root("removing network namespaces")
    jump_ns, server_ns, host_if = _names(prefix)
    namespaces = [ns for ns in (jump_ns, server_ns) if (Path("/run/netns") / ns).exists()]
    pids: list[int] = []
    for ns in namespaces:
        out = run(["ip", "netns", "pids", ns], timeout=10).stdout
        pids.extend(int(p) for p in out.split() if p.isdigit())
    if pids:
        terminate(pids)
    for ns in namespaces:
        run(["ip", "netns", "delete", ns], timeout=30)
    if Path("/sys/class/net", host_if).exists():
        run(["ip", "link", "delete", host_if], timeout=30)
    # Namespaces are dismantled asynchronously; wait so a rebuild can reuse the names.
    deadline = time.monotonic() + 10
    while Path("/sys/class/net", host_if).exists():
        if time.monotonic() > deadline:
            raise TetherError(f"interface {host_if} is still there 10 s after teardown")
        time.sleep(POLL)
