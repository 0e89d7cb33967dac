"""The SSH transport: the user's own OpenSSH client, one ControlMaster per destination.

Everything goes through the system ``ssh`` binary so that ``~/.ssh/config``
(ProxyJump, ProxyCommand, IdentityFile, agents, Match blocks, 2FA prompts) behaves
exactly as it does for the user at the shell.  The first connection may prompt; every
later command rides the same master.  Remote commands are always ``sh -s`` with the
script on stdin, so the login shell (bash, zsh, tcsh, fish) never parses our text.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from jupyter_tether import paths, proc
from jupyter_tether.errors import ExitCode, TetherError

log = logging.getLogger(__name__)

# Keep-alives for the master: a dead link is noticed in well under a minute, and
# Debian's BatchMode default of 300 s is overridden (shared/notes: openssh.md).
MASTER_OPTIONS = (
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=2",
    "-o",
    "ControlPersist=yes",
    # The relay's socket (relay.py) of a master that was killed is still on disk; the
    # next master's `-O forward` to the same path would fail "Address already in use".
    "-o",
    "StreamLocalBindUnlink=yes",
)


@dataclass(frozen=True)
class Target:
    """How to reach one ssh destination. Building argv does no I/O."""

    destination: str
    config_file: Path | None = None
    control_dir: Path | None = None  # None: no multiplexing (Windows)
    connect_timeout: int = 20

    @property
    def multiplexed(self) -> bool:
        return self.control_dir is not None

    def base_argv(self) -> list[str]:
        argv = ["ssh"]
        if self.config_file is not None:
            argv += ["-F", str(self.config_file)]
        if self.control_dir is None:
            # Windows OpenSSH has no ControlMaster, even if the user's config asks for one.
            argv += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
        else:
            argv += ["-o", f"ControlPath={self.control_dir}/%C"]
        argv += ["-o", f"ConnectTimeout={self.connect_timeout}"]
        return argv

    def command_argv(self, *, tty: bool = False) -> list[str]:
        """argv for one remote command that reads its script from stdin."""
        argv = self.base_argv()
        if self.multiplexed:
            # Use the master when there is one; never become one by accident.
            argv += ["-o", "ControlMaster=no"]
        argv += ["-t"] if tty else ["-T"]
        return [*argv, "--", self.destination]

    def master_argv(self, *, batch: bool = False) -> list[str]:
        return [
            *self.base_argv(),
            *(["-o", "BatchMode=yes"] if batch else []),
            "-o",
            "ControlMaster=yes",
            *MASTER_OPTIONS,
            "-f",
            "-N",
            "--",
            self.destination,
        ]

    def control_argv(self, op: str, *extra: str) -> list[str]:
        return [*self.base_argv(), "-O", op, *extra, "--", self.destination]


# What an ssh destination ([user@]host[:port], ssh://..., an alias) is made of. Anything
# else (spaces, quotes, ;, $, `) is refused: older OpenSSH hands %h/%r to a shell in
# ProxyCommand and Match exec (CVE-2023-51385).
_DESTINATION_RE = re.compile(r"^[A-Za-z0-9._@%:/\[\]+-]+$")


def make_target(destination: str, *, config_file: Path | None = None) -> Target:
    if destination.startswith("-") or not _DESTINATION_RE.match(destination):
        raise TetherError(
            f"{destination!r} is not an ssh destination",
            hint="a destination is an alias from ~/.ssh/config or [user@]host",
            code=ExitCode.USAGE,
        )
    if config_file is None and os.environ.get("JUPYTER_TETHER_SSH_CONFIG"):
        config_file = Path(os.environ["JUPYTER_TETHER_SSH_CONFIG"])
    if config_file is not None:
        # Absolute: the supervisor and ProxyCommands run from other directories.
        config_file = Path(os.path.abspath(config_file))
    if config_file is not None and not config_file.is_file():
        raise TetherError(
            f"ssh config file {config_file} does not exist",
            hint="pass an existing file to --ssh-config",
            code=ExitCode.CONFIG,
        )
    control_dir = None if os.name == "nt" else paths.runtime_dir() / "cm"
    if control_dir is not None:
        paths.ensure_private_dir(control_dir)
    return Target(destination=destination, config_file=config_file, control_dir=control_dir)


def _master_lock(target: Target) -> contextlib.AbstractContextManager[None]:
    """Serialise master start-up per destination: two masters would leave a stray ssh."""
    assert target.control_dir is not None
    name = re.sub(r"[^A-Za-z0-9._@-]", "_", target.destination)[:80]
    return paths.hold_lock(
        target.control_dir / f".{name}.lock",
        timeout=120,
        busy=TetherError(
            f"another tether command has been connecting to {target.destination} for 2 minutes",
            hint="it may be waiting for a password or 2FA prompt in another terminal",
            code=ExitCode.SSH_CONNECT,
        ),
    )


def master_alive(target: Target) -> bool:
    if not target.multiplexed:
        return False
    return proc.run(target.control_argv("check"), timeout=10, stdin_devnull=True).ok


def ensure_master(target: Target, *, batch: bool = False) -> bool:
    """Start the ControlMaster if it isn't running. Returns True when one was started.

    This is the only step that may prompt (password, 2FA, key passphrase): ssh asks on
    the terminal itself, and every later command reuses the authenticated master.
    ``batch`` (the supervisor, which has no terminal) never prompts: a login that needs
    a password or 2FA then fails with advice to reconnect by hand.
    """
    if not target.multiplexed:
        return False
    with _master_lock(target):
        check = proc.run(target.control_argv("check"), timeout=10, stdin_devnull=True)
        if check.ok:
            return False
        _remove_stale_socket(target, check.stderr)
        res = proc.run(
            target.master_argv(batch=batch),
            timeout=target.connect_timeout + (10 if batch else 100),
            stdin_devnull=batch,
        )
        if not res.ok:
            err = ssh_error(target, res.stderr, res.returncode)
            if batch and err.code == ExitCode.SSH_AUTH:
                err.hint = f"this login needs you at a terminal: `tether open {target.destination}`"
            raise err
        # In the background: the forward (a reconnect's whole point) need not wait for a
        # login shell on the server; a burst in the first moments may still stall.
        threading.Thread(target=_interactive_first, args=(target,), daemon=True).start()
        return True


def _interactive_first(target: Target) -> None:
    """Open the master's first session with a pty, so that sshd turns TCP_NODELAY on.

    sshd decides once per connection, on its first session, whether it is interactive
    (packet.c ``ssh_packet_set_interactive``; before OpenSSH 10.1 only a pty makes it so),
    and a non-interactive connection leaves Nagle on: each burst of small replies then
    waits for the workstation's delayed ACK (benchmarks/README.md).  BatchMode: the master
    is the one place that authenticates; this rides it or fails.  Best effort: a server
    that refuses ptys still works, only slower.
    """
    argv = [*target.base_argv(), "-o", "ControlMaster=no", "-o", "BatchMode=yes", "-tt"]
    try:
        res = proc.run([*argv, "--", target.destination, "true"], timeout=20, stdin_devnull=True)
    except TetherError as exc:
        log.debug("no pty session on the new master: %s", exc.message)
        return
    if not res.ok:
        log.debug("no pty session on the new master: %s", first_meaningful_line(res.stderr))


def _remove_stale_socket(target: Target, check_stderr: str) -> None:
    """A master killed with SIGKILL leaves its control socket behind, and a new
    ``ControlMaster=yes`` then runs without multiplexing ("ControlSocket ... already
    exists, disabling multiplexing"): every later ``-O forward`` fails.  Remove it."""
    m = re.search(r"connect\((.+)\): Connection refused", check_stderr)
    if m is None or target.control_dir is None:
        return
    sock = Path(m.group(1))
    if sock.parent == target.control_dir and sock.is_socket():
        sock.unlink(missing_ok=True)


def exit_master(target: Target) -> None:
    if target.multiplexed and master_alive(target):
        proc.run(target.control_argv("exit"), timeout=10, stdin_devnull=True)


def run_script(target: Target, script: str, *, timeout: float = 120) -> proc.Result:
    """Run a POSIX sh script on the server (``sh -s``), its text on stdin.

    ssh's own failures (rc 255) become a :class:`TetherError`; the script's exit status
    is left to the caller.
    """
    res = proc.run([*target.command_argv(), "sh", "-s"], input=script, timeout=timeout)
    if res.returncode == 255 and not res.stdout:
        raise ssh_error(target, res.stderr, res.returncode)
    return res


def forward_spec(local: int | Path, remote: str) -> str:
    """``-L`` spec to a remote Unix socket path or host:port, from a local Unix socket
    (the relay's, in a private directory) or a TCP port always bound to 127.0.0.1."""
    if isinstance(local, Path):
        return f"{local}:{remote}"
    return f"127.0.0.1:{local}:{remote}"


def add_forward(target: Target, local: int | Path, remote: str) -> proc.Result:
    return proc.run(
        target.control_argv("forward", "-L", forward_spec(local, remote)),
        timeout=15,
        stdin_devnull=True,
    )


def cancel_forward(target: Target, local: int | Path, remote: str) -> None:
    proc.run(
        target.control_argv("cancel", "-L", forward_spec(local, remote)),
        timeout=15,
        stdin_devnull=True,
    )
    if isinstance(local, Path):
        # ssh leaves the socket file of a cancelled Unix-socket listener behind.
        with contextlib.suppress(OSError):
            local.unlink()


# --- turning ssh's stderr into advice -------------------------------------------------

_NOISE = (
    "warning: permanently added",
    "pseudo-terminal will not be allocated",
    "** warning: connection is not using a post-quantum",
    "** this session may be vulnerable",
    "** the server may need to be upgraded",
    "kex_exchange_identification",
    "connection closed by unknown port 65535",
)


def first_meaningful_line(stderr: str) -> str:
    for raw in stderr.splitlines():
        line = raw.strip()
        if not line or set(line) <= {"@", " "}:
            continue
        if any(line.lower().startswith(n) or n in line.lower() for n in _NOISE):
            continue
        return line
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[0] if lines else ""


@dataclass(frozen=True)
class _Rule:
    pattern: str
    message: str
    hint: str
    code: ExitCode


_RULES = (
    _Rule(
        r"remote host identification has changed|host key verification failed|"
        r"host key for .* has changed",
        "{dest}: the server's host key does not match the one in known_hosts",
        "if the server was reinstalled, remove the old key with `ssh-keygen -R HOST`; "
        "otherwise someone may be intercepting the connection",
        ExitCode.SSH_AUTH,
    ),
    _Rule(
        r"stdio forwarding failed|channel \d+: open failed|proxy.*(failed|exited)|"
        r"connection closed by unknown",
        "{dest}: the jump host could not reach the server ({detail})",
        "check ProxyJump/ProxyCommand for this host in ~/.ssh/config, and that the jump "
        "host can reach the server",
        ExitCode.SSH_CONNECT,
    ),
    _Rule(
        r"could not resolve hostname|name or service not known|nodename nor servname|"
        r"temporary failure in name resolution|no address associated",
        "{dest}: unknown host",
        "check the name, or add a Host entry for it to ~/.ssh/config",
        ExitCode.SSH_CONNECT,
    ),
    _Rule(
        r"permission denied \(|too many authentication failures|authentication failed",
        "{dest}: permission denied ({detail})",
        "is your key loaded? `ssh-add -l`; try `ssh {dest}` by hand. tether never asks for "
        "passwords in batch mode, only through ssh's own prompt on a terminal",
        ExitCode.SSH_AUTH,
    ),
    _Rule(
        r"connection refused",
        "{dest}: connection refused",
        "the host is up but no ssh server listens on that port; check Port in ~/.ssh/config",
        ExitCode.SSH_CONNECT,
    ),
    _Rule(
        r"timed out|operation timed out",
        "{dest}: connection timed out",
        "the host or its network is unreachable from here; a VPN or a ProxyJump may be needed",
        ExitCode.SSH_CONNECT,
    ),
    _Rule(
        r"no route to host|network is unreachable",
        "{dest}: no route to host",
        "check your network connection, VPN, or ProxyJump settings",
        ExitCode.SSH_CONNECT,
    ),
    _Rule(
        r"bad configuration option|garbage at end of line|can't open user config|"
        r"unsupported option|bad .* (spec|specification)|keyword .* extra arguments",
        "ssh configuration error: {detail}",
        "fix the ssh config file named above",
        ExitCode.CONFIG,
    ),
    _Rule(
        r"connection closed by|connection reset|broken pipe|received disconnect",
        "{dest}: the server closed the connection ({detail})",
        "the server may limit connections (MaxStartups) or be restarting; try again",
        ExitCode.SSH_CONNECT,
    ),
)


def ssh_error(target: Target, stderr: str, returncode: int) -> TetherError:
    """Turn a failed ssh (rc 255) into specific advice, using the first meaningful line."""
    detail = first_meaningful_line(stderr)
    text = stderr.lower()
    dest = target.destination
    for rule in _RULES:
        if re.search(rule.pattern, text):
            short = detail
            if "permission denied" in rule.message:
                m = re.search(r"permission denied \(([^)]*)\)", text)
                short = m.group(1) if m else "authentication failed"
            return TetherError(
                rule.message.format(dest=dest, detail=short),
                hint=rule.hint.format(dest=dest),
                code=rule.code,
            )
    return TetherError(
        f"{dest}: ssh failed (exit {returncode}): {detail or 'no message'}",
        hint=f"try `ssh {dest}` by hand, or rerun with --verbose",
        code=ExitCode.SSH_CONNECT,
    )
