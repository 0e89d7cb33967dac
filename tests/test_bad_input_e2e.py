"""Bad input, one row per case: a clear one-paragraph message with a hint, a
documented exit code, nothing left on either side, and no shell ever runs our text.

Every case runs with a canary path in /tmp that an injected ``touch`` would create,
locally (as root) or on the server (as the test account): it must never appear.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jupyter_tether import state
from jupyter_tether.errors import ExitCode
from testing.helpers.cli import Run, Tether
from testing.helpers.users import as_user, home_of
from testing.sshd import generate_key, host_entry, write_ssh_config
from tests.conftest import IS_ROOT, PROV_USER, LocalSshd
from tests.helpers import remote_procs, run_isolated

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not IS_ROOT, reason="needs root")]

CANARY = Path(f"/tmp/tt-canary-{os.getpid()}")
TOUCH = f"touch {CANARY}"


@dataclass
class Ctx:
    """What a case's setup gets, and what it may set for the check afterwards."""

    tether: Tether
    sshd: LocalSshd
    env: Path
    tmp: Path
    request: pytest.FixtureRequest | None = None  # for fixtures only some cases need
    account: str = ""  # the server account whose side must stay clean
    envs_before: list[str] | None = None  # the account's managed environments, if it has
    cleanups: list[Callable[[], object]] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    id: str
    code: ExitCode
    words: tuple[str, ...]
    setup: Callable[[Ctx], list[str]]  # returns the argv after `tether`


def profile(**keys: object) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        ctx.tether.profile("tt-server", env=str(ctx.env), **keys)
        return ["up", "tt-server", "--no-browser"]

    return setup


def config_text(text: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        ctx.tether.config_path.parent.mkdir(parents=True, exist_ok=True)
        ctx.tether.config_path.write_text(text)
        return ["up", "tt-server", "--no-browser"]

    return setup


def argv(*args: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        ctx.tether.profile("tt-server", env=str(ctx.env))
        return list(args)

    return setup


def ssh_config(text: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        path = ctx.tmp / "bad_ssh_config"
        path.write_text(text)
        ctx.tether.profile("tt-server", env=str(ctx.env))
        return ["up", "tt-server", "--no-browser", "-F", str(path)]

    return setup


def busy_port(ctx: Ctx) -> list[str]:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    ctx.cleanups.append(busy.close)
    ctx.tether.profile("tt-server", env=str(ctx.env))
    return ["up", "tt-server", "--no-browser", "--port", str(busy.getsockname()[1])]


def host_key_mismatch(ctx: Ctx) -> list[str]:
    impostor = generate_key(ctx.tmp / "impostor", comment="some other host")
    key = " ".join(Path(f"{impostor}.pub").read_text().split()[:2])
    entry = host_entry(ctx.sshd.server, "tt-server", user=ctx.sshd.user)
    path = write_ssh_config(
        ctx.tmp / "impostor_config",
        [entry.__class__(**{**entry.__dict__, "host_public_key": key})],
    )
    ctx.tether.profile("tt-server", env=str(ctx.env))
    return ["up", "tt-server", "--no-browser", "-F", str(path)]


def wrong_password_batchmode(ctx: Ctx) -> list[str]:
    """BatchMode, a key the server does not know, password auth preferred: ssh must not
    prompt, and the failure is an authentication one."""
    stranger = generate_key(ctx.tmp / "stranger", comment="not authorized")
    entry = host_entry(
        ctx.sshd.server,
        "tt-server",
        user=ctx.sshd.user,
        options=[("PreferredAuthentications", "password,keyboard-interactive,publickey")],
    )
    path = write_ssh_config(
        ctx.tmp / "stranger_config",
        [entry.__class__(**{**entry.__dict__, "identity_file": stranger})],
    )
    ctx.tether.profile("tt-server", env=str(ctx.env))
    return ["up", "tt-server", "--no-browser", "-F", str(path)]


def _other_home_mount(ctx: Ctx, options: str, fill: bool) -> list[str]:
    """tether-other's home replaced by a read-only bind mount or a tiny full tmpfs."""
    other = ctx.sshd.other_user
    assert other is not None and ctx.sshd.other_host is not None
    ctx.account = other
    home = home_of(other)
    pw = pwd.getpwnam(other)
    if options == "ro":
        subprocess.run(["mount", "--bind", str(home), str(home)], check=True)
        ctx.cleanups.append(lambda: subprocess.run(["umount", "-l", str(home)], check=False))
        subprocess.run(["mount", "-o", "remount,bind,ro", str(home)], check=True)
    else:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0750", "tmpfs", str(home)], check=True
        )
        ctx.cleanups.append(lambda: subprocess.run(["umount", "-l", str(home)], check=False))
        os.chown(home, pw.pw_uid, pw.pw_gid)
        if fill:
            res = as_user(other, ["sh", "-c", "cat /dev/zero > fill; true"])
            assert res.returncode == 0
    ctx.tether.profile(ctx.sshd.other_host, env=str(ctx.env))
    return ["up", ctx.sshd.other_host, "--no-browser"]


def read_only_home(ctx: Ctx) -> list[str]:
    return _other_home_mount(ctx, "ro", fill=False)


def full_disk(ctx: Ctx) -> list[str]:
    return _other_home_mount(ctx, "tmpfs", fill=True)


def privileged_port_as_user(ctx: Ctx) -> list[str]:
    """Root may bind port 80, so this one runs as an ordinary account (see ``run``)."""
    return ["@as-other", "up", "tt-server", "--no-browser", "--port", "80"]


def managed_packages(*packages: str) -> Callable[[Ctx], list[str]]:
    """A managed environment that provisioning must refuse, built on the fresh account
    tether-prov (its own sshd, ``tt-prov``) with the session's download cache: the
    resolver fails before anything is installed, so the case takes seconds."""

    def setup(ctx: Ctx) -> list[str]:
        assert ctx.request is not None
        host = str(ctx.request.getfixturevalue("prov_sshd"))
        cache = ctx.request.getfixturevalue("prov_cache")
        ctx.request.getfixturevalue("monkeypatch").setenv("JUPYTER_TETHER_CACHE_DIR", str(cache))
        ctx.account = PROV_USER
        ctx.envs_before = managed_envs(PROV_USER)
        # A refused build still copies uv (a cache, not a half environment); an account
        # that was fresh is left fresh for the provisioning tests that need it so.
        data = home_of(PROV_USER) / ".local/share/jupyter-tether"
        if not data.exists():
            ctx.cleanups.append(lambda: shutil.rmtree(data, ignore_errors=True))
        ctx.tether.profile(host, packages=list(packages))
        return ["up", host, "--no-browser"]

    return setup


def managed_envs(account: str) -> list[str]:
    envs = home_of(account) / ".local/share/jupyter-tether/envs"
    return (
        sorted(p.name for p in envs.iterdir() if not p.name.startswith("."))
        if envs.is_dir()
        else []
    )


def disconnect_mid_probe(ctx: Ctx) -> list[str]:
    """The server drops the connection while the probe runs, for real: tether-other's
    login rc file (which only the probe's ``$SHELL -l`` reads) blocks while a hold file
    exists, and meanwhile that account's sshd session processes are killed."""
    other = ctx.sshd.other_user
    assert other is not None and ctx.sshd.other_host is not None
    ctx.account = other
    pw = pwd.getpwnam(other)
    home = home_of(other)
    hold_dir = Path(tempfile.mkdtemp(prefix="tt-hold-", dir="/tmp"))
    hold_dir.chmod(0o755)
    hold, reached = hold_dir / "hold", home / ".tt-probe-reached"
    hold.touch()
    rc_file = home / ".bash_profile"
    assert not rc_file.exists(), "the account has a .bash_profile of its own"
    rc_file.write_text(
        f"if [ -e {hold} ]; then\n"
        f"    : > {reached}\n"
        f"    i=0; while [ -e {hold} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done\n"
        "fi\n"
    )
    os.chown(rc_file, pw.pw_uid, pw.pw_gid)
    killed: list[int] = []
    cutter = threading.Thread(
        target=cut_sessions_when, args=(reached, hold, other, killed), daemon=True
    )
    cutter.start()

    def cleanup() -> None:
        hold.unlink(missing_ok=True)
        cutter.join(timeout=70)
        rc_file.unlink(missing_ok=True)
        reached.unlink(missing_ok=True)
        shutil.rmtree(hold_dir, ignore_errors=True)
        assert killed, "the probe never reached the login shell: nothing was cut"

    ctx.cleanups.append(cleanup)
    ctx.tether.profile(ctx.sshd.other_host, env=str(ctx.env))
    return ["up", ctx.sshd.other_host, "--no-browser"]


def cut_sessions_when(reached: Path, hold: Path, account: str, killed: list[int]) -> None:
    """Once the login shell blocks, kill ``account``'s sshd session processes (by pid),
    then let the shell go."""
    deadline = time.monotonic() + 60
    while not reached.exists() and hold.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if reached.exists():
        listing = subprocess.run(
            ["ps", "-u", account, "-o", "pid=,comm="], capture_output=True, text=True, check=False
        )
        for line in listing.stdout.splitlines():
            pid, _, comm = line.strip().partition(" ")
            if comm.strip() == "sshd":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
    hold.unlink(missing_ok=True)


def missing_alias(ctx: Ctx) -> list[str]:
    """The profile's ``ssh`` names an alias that no ssh config defines: ssh then looks the
    name up, in a network namespace with only ``lo`` so the lookup never leaves here."""
    ctx.tether.profile("tt-server", env=str(ctx.env), ssh="tt-no-such-alias")
    return ["@isolated", "up", "tt-server", "--no-browser"]


CASES = [
    # ---- the config file
    Case("toml-syntax", ExitCode.CONFIG, ("invalid toml",), config_text('[hosts.tt-server\nx="')),
    Case("unknown-key", ExitCode.CONFIG, ("trasnport", "did you mean"), profile(trasnport="tcp")),
    Case("wrong-type-nice", ExitCode.CONFIG, ("nice", "integer"), profile(nice="high")),
    Case("nice-out-of-range", ExitCode.CONFIG, ("nice = 25",), profile(nice=25)),
    Case("port-as-string", ExitCode.CONFIG, ("port",), profile(port="8888")),
    Case("privileged-port-in-profile", ExitCode.CONFIG, ("port = 80", "1024"), profile(port=80)),
    Case("unknown-app", ExitCode.CONFIG, ("app", "lab"), profile(app="hub")),
    Case(
        "unknown-top-level",
        ExitCode.CONFIG,
        ("unknown top-level key", "host"),
        config_text('[host.tt-server]\nenv = "x"\n'),
    ),
    Case(
        "profile-ssh-alias-missing",
        ExitCode.SSH_CONNECT,
        ("unknown host", "tt-no-such-alias", "ssh/config"),
        missing_alias,
    ),
    Case("env-var-not-string", ExitCode.CONFIG, ("env_vars",), profile(env_vars={"A": 1})),
    Case(
        "env-var-name-injection",
        ExitCode.CONFIG,
        ("env_vars",),
        profile(env_vars={f"X;{TOUCH};Y": "1"}),
    ),
    Case(
        "ssh-config-missing",
        ExitCode.CONFIG,
        ("does not exist",),
        argv("up", "tt-server", "--no-browser", "-F", "/nonexistent/ssh_config"),
    ),
    Case(
        "ssh-config-bad-option",
        ExitCode.CONFIG,
        ("ssh configuration error",),
        ssh_config("Host tt-server\n    NoSuchOption yes\n"),
    ),
    # ---- names: never a shell word
    Case("name-space", ExitCode.CONFIG, ("not a usable name",), argv("up", "tt server")),
    Case("name-semicolon", ExitCode.CONFIG, ("not a usable name",), argv("up", f"tt;{TOUCH}")),
    Case("name-subshell", ExitCode.CONFIG, ("not a usable name",), argv("up", f"$({TOUCH})")),
    Case("name-backticks", ExitCode.CONFIG, ("not a usable name",), argv("up", f"`{TOUCH}`")),
    Case("name-quotes", ExitCode.CONFIG, ("not a usable name",), argv("up", "tt'\"x")),
    Case(
        "name-option",
        ExitCode.CONFIG,
        ("not a usable name",),
        argv("up", "--", f"-oLocalCommand={TOUCH}"),
    ),
    Case(
        "profile-name-injection",
        ExitCode.CONFIG,
        ("not a usable name",),
        config_text(f'[hosts."a;{TOUCH}"]\nssh = "tt-server"\n'),
    ),
    Case(
        "ssh-dest-semicolon",
        ExitCode.USAGE,
        ("not an ssh destination",),
        profile(ssh=f"tt-server;{TOUCH}"),
    ),
    Case(
        "ssh-dest-proxycommand",
        ExitCode.USAGE,
        ("not an ssh destination",),
        profile(ssh=f"-oProxyCommand={TOUCH}"),
    ),
    Case(
        "ssh-dest-flag-backticks",
        ExitCode.USAGE,
        ("not an ssh destination",),
        argv("up", "tt-server", "--no-browser", "--ssh", f"`{TOUCH}`@tt-server"),
    ),
    Case(
        "root-dir-subshell",
        ExitCode.REMOTE_ENV,
        ("root_dir", "does not exist"),
        profile(root_dir=f"/tmp/$({TOUCH})"),
    ),
    Case(
        "env-semicolon",
        ExitCode.REMOTE_ENV,
        ("does not exist or is not executable",),
        argv("up", "tt-server", "--no-browser", "--env", f"/tmp/x; {TOUCH}"),
    ),
    Case(
        "module-injection",
        ExitCode.SERVER_START,
        ("module load",),
        profile(modules=[f"x;{TOUCH}"]),
    ),
    # ---- packages (provisioning)
    Case(
        "package-does-not-exist",
        ExitCode.PROVISION,
        ("tether-no-such-package-zz", "no package named", "packages"),
        managed_packages("tether-no-such-package-zz"),
    ),
    Case(
        "package-pins-conflict",
        ExitCode.PROVISION,
        ("conflict", "six==1.16.0", "six==1.17.0"),
        managed_packages("six==1.16.0", "six==1.17.0"),
    ),
    Case(
        "package-pin-conflicts-with-jupyter",
        ExitCode.PROVISION,
        ("conflict", "jupyter-server<2", "jupyter-server>=2.21"),
        managed_packages("jupyter_server<2"),
    ),
    # ---- the server
    Case("read-only-home", ExitCode.REMOTE_ENV, ("read-only",), read_only_home),
    Case("full-disk", ExitCode.REMOTE_ENV, ("no space left",), full_disk),
    # ---- network and auth
    Case(
        "wrong-password-batchmode",
        ExitCode.SSH_AUTH,
        ("permission denied", "ssh-add"),
        wrong_password_batchmode,
    ),
    Case(
        "disconnect-mid-probe",
        ExitCode.SSH_CONNECT,
        ("connection", "probe"),
        disconnect_mid_probe,
    ),
    Case("host-key-mismatch", ExitCode.SSH_AUTH, ("host key", "ssh-keygen -r"), host_key_mismatch),
    # ---- local ports
    Case("port-busy", ExitCode.LOCAL_PORT, ("busy",), busy_port),
    Case("port-privileged", ExitCode.LOCAL_PORT, ("privileged",), privileged_port_as_user),
]


@pytest.fixture
def ctx(
    tether: Tether,
    sshd: LocalSshd,
    jupyter_env: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Ctx]:
    assert not remote_procs(sshd.user, "jupyter"), "a server of the test account is running"
    CANARY.unlink(missing_ok=True)
    c = Ctx(
        tether=tether,
        sshd=sshd,
        env=jupyter_env,
        tmp=tmp_path,
        request=request,
        account=sshd.user,
    )
    yield c
    for cleanup in reversed(c.cleanups):
        cleanup()
    CANARY.unlink(missing_ok=True)


def run(ctx: Ctx, args: list[str]) -> Run:
    if args[0] == "@as-other":
        return run_as_other(ctx, args[1:])
    if args[0] == "@isolated":
        return run_isolated(args[1:])
    return ctx.tether(*args)


def run_as_other(ctx: Ctx, args: list[str]) -> Run:
    """The CLI in a forked child that became the ordinary account tether-other (so it
    needs nothing it would have to import again), with its own tool directories."""
    from jupyter_tether import cli

    other = ctx.sshd.other_user
    assert other is not None
    pw = pwd.getpwnam(other)
    home = Path(tempfile.mkdtemp(prefix="tt-as-other-", dir="/tmp"))  # pytest's tmp is 0700
    os.chown(home, pw.pw_uid, pw.pw_gid)
    ctx.cleanups.append(lambda: shutil.rmtree(home, ignore_errors=True))
    out, err = home / "out", home / "err"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        rc = 70
        try:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            for key in ("CONFIG", "STATE_DIR", "CACHE_DIR", "RUNTIME_DIR"):
                os.environ[f"JUPYTER_TETHER_{key}"] = str(home / key.lower())
            with open(out, "w") as o, open(err, "w") as e:
                os.dup2(o.fileno(), 1)
                os.dup2(e.fileno(), 2)
                sys.stdout, sys.stderr = o, e
                rc = cli.main(args)
                o.flush()
                e.flush()
        finally:
            os._exit(rc)
    _, status = os.waitpid(pid, 0)
    return Run(os.waitstatus_to_exitcode(status), out.read_text(), err.read_text())


def assert_nothing_left(ctx: Ctx) -> None:
    records = list((ctx.tmp / "state" / "servers").glob("*.json"))
    assert records == [], records
    cm = Path(os.environ["JUPYTER_TETHER_RUNTIME_DIR"]) / "cm"
    masters = [p for p in cm.iterdir() if p.is_socket()] if cm.is_dir() else []
    assert masters == [], f"ssh master left running: {masters}"
    assert not remote_procs(ctx.account, "jupyter")
    servers = home_of(ctx.account) / ".local/state/jupyter-tether/servers"
    left = sorted(p.name for p in servers.iterdir()) if servers.is_dir() else []
    assert left == [], left
    incoming = home_of(ctx.account) / ".local/share/jupyter-tether/envs/.incoming"
    half = sorted(p.name for p in incoming.iterdir()) if incoming.is_dir() else []
    assert half == [], f"a half-built environment was left: {half}"
    if ctx.envs_before is not None:
        assert managed_envs(ctx.account) == ctx.envs_before
    assert not CANARY.exists(), "an injected command ran"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ctx: Ctx) -> None:
    res = run(ctx, case.setup(ctx))
    assert res.rc == case.code, (res.rc, res.err)
    text = res.err.lower()
    assert "traceback" not in text, res.err
    error = [line for line in res.err.splitlines() if line.startswith("error: ")]
    hint = [line for line in res.err.splitlines() if line.startswith("hint: ")]
    assert len(error) == 1 and len(hint) == 1, res.err
    assert len(hint[0]) > len("hint: ") + 10, res.err
    for word in case.words:
        assert word.lower() in text, res.err
    assert res.out == "", res.out  # no URL, nothing half-printed
    assert_nothing_left(ctx)


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 25


def test_quoted_values_reach_the_server_literally(ctx: Ctx) -> None:
    """The flip side: hostile-looking VALUES are fine, and arrive as text."""
    value = f"$({TOUCH}); `{TOUCH}` '\" {TOUCH}"
    ctx.tether.profile("tt-server", env=str(ctx.env), env_vars={"TT_VALUE": value})
    res = ctx.tether("up", "tt-server", "--no-browser", "--json")
    try:
        assert res.rc == 0, res.err
        from testing.helpers.jupyter import run_in_kernel

        info = json.loads(res.out)
        token = info["url"].split("token=")[1]
        got = run_in_kernel(info["local_port"], token, "import os; print(os.environ['TT_VALUE'])")
        assert got == value
    finally:
        ctx.tether("down", "tt-server")
    assert not CANARY.exists()


# --------------------------------------------------------------------------- Ctrl-C

PHASES = ["connect", "probe", "start", "forward", "ready"]


def up_process(*extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jupyter_tether", "up", "tt-server", "--no-browser", *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def interrupt_at(proc: subprocess.Popen[str], phase: str) -> tuple[int, str, str]:
    """SIGINT as soon as ``• PHASE`` appears on stderr (bounded)."""
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(f"• {phase}"):
            proc.send_signal(signal.SIGINT)
            break
    else:
        proc.kill()
    out, err = proc.communicate(timeout=240)
    return proc.returncode, out, "".join(seen) + err


def server_answers(name: str) -> bool:
    from jupyter_tether import jupyter_api

    rec = state.load(name)
    return rec is not None and jupyter_api.status(rec.local_port, rec.token) is not None


@pytest.mark.parametrize("phase", PHASES)
def test_ctrl_c_in_a_fresh_up_leaves_nothing_or_everything(phase: str, ctx: Ctx) -> None:
    ctx.tether.profile("tt-server", env=str(ctx.env))
    rc, _out, err = interrupt_at(up_process(), phase)
    try:
        if rc == 0:  # the signal came after the work was done: the new state, complete
            assert server_answers("tt-server"), err
            return
        assert rc == ExitCode.INTERRUPTED, (rc, err)
        assert "interrupted" in err
        assert_nothing_left(ctx)
    finally:
        ctx.tether("down", "tt-server")


@pytest.mark.parametrize("phase", PHASES)
def test_ctrl_c_in_a_second_up_keeps_the_running_server(phase: str, ctx: Ctx) -> None:
    ctx.tether.profile("tt-server", env=str(ctx.env))
    first = ctx.tether("up", "tt-server", "--no-browser", "--json")
    assert first.rc == 0, first.err
    before = json.loads(first.out)
    try:
        rc, _out, err = interrupt_at(up_process(), phase)
        assert rc in (0, ExitCode.INTERRUPTED), (rc, err)
        rec = state.load("tt-server")
        assert rec is not None and rec.pid == before["pid"]
        assert rec.local_port == before["local_port"]
        deadline = time.monotonic() + 20  # the supervisor restores a cancelled forward
        while not server_answers("tt-server") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server_answers("tt-server")
        assert len(remote_procs(ctx.sshd.user, "jupyter-lab")) == 1
    finally:
        ctx.tether("down", "tt-server")
