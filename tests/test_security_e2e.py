"""Another user on the same server attacks a running server (SECURITY.md).

The victim is ``tether-test`` (alias ``tt-server``); the attacker is ``tether-other``, a
second ordinary account on the same machine, whose commands run through ``as_user``.
Root is used only to enumerate what listens (``ss``), never to attack.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jupyter_tether import jupyter_api, state
from testing.helpers.cli import Tether
from testing.helpers.jupyter import run_in_kernel
from testing.helpers.users import as_user, home_of
from tests.conftest import IS_ROOT, LocalSshd
from tests.helpers import remote_procs

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not IS_ROOT, reason="needs a second account")]

SECRET = "tether-secret-42"


@dataclass(frozen=True)
class Victim:
    info: dict[str, Any]
    token: str
    rundir: Path
    sock: Path | None
    port: int | None  # the server's TCP port (TCP transport only)


def _served(tether: Tether, jupyter_env: Path, *extra: str) -> Iterator[Victim]:
    tether.profile("tt-server", env=str(jupyter_env))
    res = tether("up", "tt-server", "--no-browser", "--json", *extra)
    assert res.rc == 0, res.err
    info: dict[str, Any] = json.loads(res.out)
    token = info["url"].split("token=")[1]
    rec = state.load("tt-server")
    assert rec is not None
    rundir = Path(str(rec.rundir))
    sock = Path(rec.remote) if rec.transport == "socket" else None
    port = None if sock else int(rec.remote.rsplit(":", 1)[1])
    # A kernel with something worth stealing in it.
    assert run_in_kernel(info["local_port"], token, f"secret = {SECRET!r}; print(secret)") == SECRET
    try:
        yield Victim(info=info, token=token, rundir=rundir, sock=sock, port=port)
    finally:
        tether("down", "tt-server", "--purge")


@pytest.fixture
def victim(tether: Tether, sshd: LocalSshd, jupyter_env: Path) -> Iterator[Victim]:
    """tether-test's server on its Unix socket, with a kernel and the autostart hook."""
    yield from _served(tether, jupyter_env, "--autostart")


@pytest.fixture
def tcp_victim(tether: Tether, sshd: LocalSshd, jupyter_env: Path) -> Iterator[Victim]:
    """The same on the TCP fallback (127.0.0.1 on the server), with a kernel."""
    yield from _served(tether, jupyter_env, "--transport", "tcp")


def attacker(sshd: LocalSshd) -> str:
    assert sshd.other_user is not None
    return sshd.other_user


def attack(sshd: LocalSshd, code: str, stdin: str = "") -> str:
    """Run Python ``code`` as the other user; return what it printed."""
    res = as_user(attacker(sshd), ["/usr/bin/python3", "-c", code], input=stdin, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def listeners(user: str, kind: str) -> list[str]:
    """What ``user``'s processes listen on: ``ss -l`` as root, ``kind`` "t" (TCP) or "x"."""
    uid = pwd.getpwnam(user).pw_uid
    out = subprocess.run(
        ["ss", f"-l{kind}npH"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    found = []
    for line in out:
        pids = [int(p) for p in re.findall(r"pid=(\d+)", line)]
        if not any(uid_of(p) == uid for p in pids):
            continue
        fields = line.split()
        # TCP: State Recv-Q Send-Q Local Peer ...; unix: Netid State Recv-Q Send-Q Local ...
        found.append(fields[3] if kind == "t" else fields[4])
    return found


# --------------------------------------------------------------------------- reaching it


def test_other_user_cannot_connect_to_any_socket_of_the_server(
    victim: Victim, sshd: LocalSshd
) -> None:
    """The Jupyter socket and every kernel ipc socket: all in the private run dir."""
    unix = [p for p in listeners(sshd.user, "x") if p.startswith("/")]
    assert victim.sock is not None and str(victim.sock) in unix
    kernel_sockets = [p for p in unix if p.startswith(str(victim.rundir / "runtime"))]
    assert kernel_sockets, f"no kernel ipc sockets found among {unix}"
    code = (
        "import json,socket,sys\n"
        "for path in json.load(sys.stdin):\n"
        " s=socket.socket(socket.AF_UNIX)\n"
        " try:\n  s.connect(path)\n  print('CONNECTED', path)\n"
        " except OSError as e:\n  print(type(e).__name__, path)\n"
    )
    out = attack(sshd, code, json.dumps(unix))
    assert "CONNECTED" not in out, out
    assert out.count("PermissionError") >= 1 + len(kernel_sockets), out
    # Nor can the attacker list the run dir's contents.
    out = attack(
        sshd,
        f"import os\ntry: os.listdir({str(victim.rundir)!r})\n"
        "except OSError as e: print(type(e).__name__)\nelse: print('LISTED')",
    )
    assert out == "PermissionError"


SNOOP = """
import json, sys, time, zmq
ports = json.load(sys.stdin)
ctx = zmq.Context()
socks = []
for port in ports:
    for kind in (zmq.SUB, zmq.PULL, zmq.DEALER):
        s = ctx.socket(kind)
        if kind == zmq.SUB:
            s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect("tcp://" + port)
        socks.append(s)
poller = zmq.Poller()
for s in socks:
    poller.register(s, zmq.POLLIN)
print("LISTENING", flush=True)
got = []
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    for s, _ in poller.poll(100):
        got.append(b"".join(s.recv_multipart()).decode(errors="replace"))
print(json.dumps(got))
"""


def test_tcp_ports_of_the_server_and_kernels_yield_nothing(
    victim: Victim, sshd: LocalSshd, jupyter_env: Path
) -> None:
    """Jupyter listens on no TCP port and the kernels' channels are on ipc. What is left
    is ipykernel's IOPub pipe (one PULL socket per kernel on 127.0.0.1, for output of
    forked children, authenticated by a random id): the attacker subscribes to every TCP
    port the victim listens on, with zmq (from the victim's own, world-readable, env),
    while the kernel prints the secret from the kernel and from a forked child."""
    code, body = jupyter_api.request(victim.info["local_port"], "GET", "/api/kernels", victim.token)
    assert code == 200
    kernels = len(json.loads(body))
    ports = listeners(sshd.user, "t")
    assert all(p.startswith("127.0.0.1:") for p in ports), ports
    assert len(ports) <= kernels, f"{ports}: more TCP ports than kernels ({kernels})"
    python = str(jupyter_env / "bin" / "python")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        snoop = pool.submit(
            as_user, attacker(sshd), [python, "-c", SNOOP, "8"], input=json.dumps(ports)
        )
        leak = (
            "import os, time\n"
            "for _ in range(5):\n"
            " print(secret, flush=True)\n"
            " pid = os.fork()\n"
            " if pid == 0:\n"
            "  print('child', secret, flush=True); os._exit(0)\n"
            " os.waitpid(pid, 0); time.sleep(0.5)\n"
        )
        printed = run_in_kernel(
            victim.info["local_port"], victim.token, f"secret={SECRET!r}\n" + leak
        )
        assert SECRET in printed  # the owner sees it
        res = snoop.result(timeout=120)
    assert res.returncode == 0, res.stderr
    assert "LISTENING" in res.stdout
    got = json.loads(res.stdout.splitlines()[-1])
    assert not any(SECRET in m for m in got), got


def test_tcp_fallback_needs_the_token_and_kernels_stay_off_tcp(
    tcp_victim: Victim, sshd: LocalSshd
) -> None:
    """On TCP the server's port is reachable by anyone on the host: every route but /api
    answers 403 without the token, and the kernels still listen on no TCP port."""
    ports = listeners(sshd.user, "t")
    assert f"127.0.0.1:{tcp_victim.port}" in ports, ports
    assert all(p.startswith("127.0.0.1:") for p in ports), ports
    code = (
        "import http.client,json,sys\n"
        "port=int(sys.stdin.read())\n"
        "for path in ('/api/status','/api/kernels','/api/sessions','/api/contents',"
        "'/lab','/api/kernels/x/channels'):\n"
        " c=http.client.HTTPConnection('127.0.0.1',port,timeout=10)\n"
        " c.request('GET',path)\n"
        " print(path, c.getresponse().status)\n"
    )
    out = attack(sshd, code, str(tcp_victim.port))
    for line in out.splitlines():
        path, status = line.split()
        if path == "/lab":
            assert status in ("302", "403"), out  # a redirect to the login page
        else:
            assert status in ("403", "404"), out


def test_local_forward_listens_on_loopback_only(victim: Victim) -> None:
    port = victim.info["local_port"]
    lines = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    addresses = {line.split()[3] for line in lines}
    assert addresses == {f"127.0.0.1:{port}"}, addresses
    # A workstation user without the token gets nothing but 403 through it.
    code, _ = jupyter_api.request(port, "GET", "/api/kernels", None)
    assert code == 403


# --------------------------------------------------------------------------- the token


def test_token_not_in_any_command_line_or_environment(victim: Victim, sshd: LocalSshd) -> None:
    """ps and /proc/*/cmdline as the attacker; /proc/*/environ of EVERY process as root."""
    ps = as_user(attacker(sshd), ["ps", "-eo", "args"])
    assert ps.returncode == 0 and "jupyter" in ps.stdout
    assert victim.token not in ps.stdout
    code = (
        "import os,sys\n"
        "token=sys.stdin.read().encode()\n"
        "seen=hits=0\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        " for f in ('cmdline','environ'):\n"
        "  try: data=open('/proc/%s/%s'%(pid,f),'rb').read()\n"
        "  except OSError: continue\n"
        "  seen+=1; hits+=token in data\n"
        "print(seen, hits)\n"
    )
    seen, hits = attack(sshd, code, victim.token).split()
    assert int(seen) > 10 and int(hits) == 0
    # Stronger than the attacker can check: no process at all, on either side, carries
    # the token in its environment or argv (the supervisor and Jupyter included).
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for name in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{pid}/{name}").read_bytes()
            except OSError:
                continue
            assert victim.token.encode() not in data, f"pid {pid} has the token in its {name}"


def test_token_in_no_file_the_attacker_can_read(victim: Victim, sshd: LocalSshd) -> None:
    """Every file the attacker can open under /tmp, /var/tmp, /dev/shm, /run, /home, the
    cron spool and systemd's directories, without the token in any of them."""
    roots = ["/tmp", "/var/tmp", "/dev/shm", "/run", "/home", "/var/spool", "/etc/systemd"]
    roots.append(str(home_of(sshd.user)))
    code = (
        "import json,os,sys\n"
        "req=json.load(sys.stdin); token=req['token'].encode()\n"
        "read=0; hits=[]\n"
        "for root in req['roots']:\n"
        " for d,dirs,files in os.walk(root):\n"
        "  for f in files:\n"
        "   p=os.path.join(d,f)\n"
        "   if os.path.islink(p) or not os.path.isfile(p): continue\n"
        "   try: data=open(p,'rb').read(4<<20)\n"
        "   except OSError: continue\n"
        "   read+=1\n"
        "   if token in data: hits.append(p)\n"
        "print(json.dumps({'read':read,'hits':hits}))\n"
    )
    out = json.loads(attack(sshd, code, json.dumps({"token": victim.token, "roots": roots})))
    assert out["read"] > 20, out
    assert out["hits"] == [], out
    # The hook that revives the server after a reboot holds no secret either.
    tab = subprocess.run(
        ["crontab", "-l", "-u", sshd.user], capture_output=True, text=True, check=False
    )
    assert "jupyter-tether" in tab.stdout, "the autostart hook was not installed"
    assert victim.token not in tab.stdout
    denied = as_user(attacker(sshd), ["crontab", "-l", "-u", sshd.user])
    assert denied.returncode != 0


def test_token_not_in_local_logs_or_world_readable_files(victim: Victim, tether_home: Path) -> None:
    """Workstation side: the supervisor's log and status say no token; the only files
    holding it are 0600."""
    for path in tether_home.rglob("*"):
        if not path.is_file():
            continue
        if victim.token.encode() in path.read_bytes():
            assert path.stat().st_mode & 0o077 == 0, f"{path} holds the token"
            assert path.suffix == ".json" and path.parent.name == "servers", path
    for log in (tether_home / "state" / "supervisors").glob("*.log"):
        assert victim.token not in log.read_text(errors="replace")


def test_tmux_session_cannot_be_attached_or_read(victim: Victim, sshd: LocalSshd) -> None:
    tsock = victim.rundir / "tmux.sock"
    assert tsock.is_socket(), "the server is expected to run under tmux here"
    # The owner can read the pane; the token is not in its scrollback either.
    pane = as_user(sshd.user, ["tmux", "-S", str(tsock), "capture-pane", "-p", "-S", "-"])
    assert pane.returncode == 0, pane.stderr
    assert victim.token not in pane.stdout
    for argv in (
        ["tmux", "-S", str(tsock), "capture-pane", "-p", "-S", "-"],
        ["tmux", "-S", str(tsock), "attach", "-r"],
        ["tmux", "-S", str(tsock), "list-sessions"],
    ):
        res = as_user(attacker(sshd), argv, timeout=20)
        assert res.returncode != 0, (argv, res.stdout)
        assert victim.token not in res.stdout
    # The victim's default tmux server (if any) is no way in either.
    uid = pwd.getpwnam(sshd.user).pw_uid
    res = as_user(attacker(sshd), ["tmux", "-S", f"/tmp/tmux-{uid}/default", "ls"], timeout=20)
    assert res.returncode != 0
    # screen keeps its sessions in a per-user 0700 directory; multiuser is never enabled.
    res = as_user(attacker(sshd), ["screen", "-ls", f"{sshd.user}/"], timeout=20)
    assert "tether-tt-server" not in res.stdout


def test_kernel_secret_unreachable_without_token(victim: Victim, sshd: LocalSshd) -> None:
    """End to end: the attacker knows the port number of the victim's forward (same
    machine here) but not the token: the kernel's variable stays out of reach."""
    port = victim.info["local_port"]
    code = (
        "import http.client,sys\n"
        "port=int(sys.stdin.read())\n"
        "for path in ('/api/kernels','/api/sessions','/api/contents'):\n"
        " c=http.client.HTTPConnection('127.0.0.1',port,timeout=10)\n"
        " c.request('GET',path)\n"
        " r=c.getresponse(); print(r.status, r.read()[:200])\n"
    )
    out = attack(sshd, code, str(port))
    assert all(line.startswith("403") for line in out.splitlines()), out
    assert SECRET not in out


# --------------------------------------------------------------------------- squatting


@pytest.fixture
def clean_run_base(sshd: LocalSshd) -> Iterator[Path]:
    """The predictable run base ``/tmp/jupyter-tether-UID`` of the victim, absent: no
    server of the victim may be running (the test is about the FIRST ``up``)."""
    assert not remote_procs(sshd.user, "jupyter"), "a server of the victim is still running"
    uid = pwd.getpwnam(sshd.user).pw_uid
    base = Path(f"/tmp/jupyter-tether-{uid}")

    def wipe() -> None:
        if base.is_symlink() or base.is_file():
            base.unlink()
        elif base.exists():
            shutil.rmtree(base)
        for stray in Path("/tmp").glob(f"jupyter-tether-{uid}-*"):
            shutil.rmtree(stray, ignore_errors=True)

    wipe()
    yield base
    wipe()


def _plant(sshd: LocalSshd, base: Path, kind: str, decoy: Path) -> None:
    """The attacker prepares ``base`` before the victim's first ``up``."""
    other = attacker(sshd)
    if kind == "dir":
        cmd = f"mkdir -m 0777 {base} && mkdir -m 0777 {base}/tt-server"
    elif kind == "socket-path":
        cmd = (
            f"mkdir -m 0777 {base} {base}/tt-server && "
            f'/usr/bin/python3 -c "import socket; s=socket.socket(socket.AF_UNIX); '
            f"s.bind('{base}/tt-server/jupyter.sock')\""
        )
    elif kind == "symlink-to-attacker-dir":
        cmd = f"mkdir -m 0777 {decoy} && ln -s {decoy} {base}"
    elif kind == "symlink-to-victim-home":
        cmd = f"ln -s {home_of(sshd.user)} {base}"
    elif kind == "file":
        cmd = f"touch {base} && chmod 0666 {base}"
    else:
        raise AssertionError(kind)
    res = as_user(other, ["sh", "-c", cmd])
    assert res.returncode == 0, res.stderr
    assert base.is_symlink() or base.lstat().st_uid == pwd.getpwnam(other).pw_uid


@pytest.mark.parametrize(
    "kind",
    ["dir", "socket-path", "symlink-to-attacker-dir", "symlink-to-victim-home", "file"],
)
def test_squatted_run_dir_is_routed_around_never_followed(
    kind: str, tether: Tether, sshd: LocalSshd, jupyter_env: Path, clean_run_base: Path
) -> None:
    base = clean_run_base
    decoy = Path(tempfile.gettempdir()) / f"tt-decoy-{os.getpid()}"
    shutil.rmtree(decoy, ignore_errors=True)
    home_before = sorted(p.name for p in home_of(sshd.user).iterdir())
    try:
        _plant(sshd, base, kind, decoy)
        before = base.lstat()
        tether.profile("tt-server", env=str(jupyter_env))
        res = tether("up", "tt-server", "--no-browser", "--json")
        try:
            assert res.rc == 0, res.err
            info = json.loads(res.out)
            rec = state.load("tt-server")
            assert rec is not None
            sock = Path(rec.remote)
            rundir = sock.parent
            # The server's directory is a fresh private one of the victim's, reached
            # without any symlink, and not the planted one.
            assert rundir.resolve() == rundir
            assert not str(rundir).startswith(str(base) + "/")
            assert rundir.parent.resolve() == rundir.parent
            for d in (rundir, rundir.parent):
                st = d.lstat()
                assert st.st_uid == pwd.getpwnam(sshd.user).pw_uid
                assert st.st_mode & 0o777 == 0o700
            # The plant is untouched: not chmod-ed, nothing created through it.
            after = base.lstat()
            assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)
            if kind == "symlink-to-attacker-dir":
                assert list(decoy.iterdir()) == []
            if kind == "symlink-to-victim-home":
                assert sorted(p.name for p in home_of(sshd.user).iterdir()) == home_before
            # And it works, out of the attacker's reach.
            token = info["url"].split("token=")[1]
            assert run_in_kernel(info["local_port"], token, "print(3*3)") == "9"
            probe = (
                "import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
                "try: s.connect(sys.stdin.read())\nexcept OSError as e: print(type(e).__name__)\n"
                "else: print('CONNECTED')"
            )
            assert attack(sshd, probe, str(sock)) == "PermissionError"
        finally:
            tether("down", "tt-server")
    finally:
        shutil.rmtree(decoy, ignore_errors=True)


@pytest.mark.parametrize("kind", ["symlink", "foreign-dir"])
def test_workstation_runtime_dir_squatting_is_refused(
    kind: str, tether: Tether, sshd: LocalSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the workstation the control-socket directory (``/tmp/jupyter-tether-UID`` when
    there is no XDG_RUNTIME_DIR) is refused, not followed, when someone planted it."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o1777)
    tmp.chmod(0o1777)
    planted = tmp / f"jupyter-tether-{os.getuid()}"
    decoy = tmp / "decoy"
    decoy.mkdir(mode=0o777)
    if kind == "symlink":
        planted.symlink_to(decoy)
    else:
        planted.mkdir(mode=0o777)
        other = pwd.getpwnam(attacker(sshd))
        os.chown(planted, other.pw_uid, other.pw_gid)
    with monkeypatch.context() as m:
        m.delenv("JUPYTER_TETHER_RUNTIME_DIR")
        m.delenv("XDG_RUNTIME_DIR", raising=False)
        m.setattr(tempfile, "tempdir", str(tmp))
        res = tether("up", "tt-server", "--no-browser")
    assert res.rc == 1, res.err
    assert "error:" in res.err and "hint:" in res.err and str(planted) in res.err
    assert list(decoy.iterdir()) == []
    assert (planted.lstat().st_mode & 0o777) in (0o777, 0o755)  # not chmod-ed
    assert state.load("tt-server") is None


def test_socket_connect_attempt_from_attacker_host_alias(victim: Victim, sshd: LocalSshd) -> None:
    """Through ssh as the attacker (``tt-other``), with a forward of their own to the
    victim's socket: sshd, running as the attacker, is refused too."""
    assert sshd.other_host is not None and victim.sock is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            "ssh",
            "-F",
            str(sshd.ssh_config.path),
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            f"127.0.0.1:{port}:{victim.sock}",
            sshd.other_host,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while True:  # until ssh listens on the port (bounded)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the attacker's ssh -L never listened"
                time.sleep(0.05)
        with pytest.raises(jupyter_api.Unreachable):
            jupyter_api.request(port, "GET", "/api", None, timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
