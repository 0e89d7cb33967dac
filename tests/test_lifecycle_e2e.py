"""The rest of the lifecycle against a real sshd: concurrency, profiles reaching the server
(modules, nice, env_vars, root_dir), the TCP fallback, logs/open/attach/config, -v."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_tether import jupyter_api, state
from jupyter_tether.errors import ExitCode
from testing.accounts import ensure_user
from testing.helpers.cli import Tether
from testing.helpers.jupyter import run_in_kernel
from testing.helpers.ssh import kill_masters
from testing.helpers.users import home_of
from testing.sshd import host_entry, start_sshd, stop_sshd
from tests.conftest import IS_ROOT, LocalSshd
from tests.helpers import remote_procs

pytestmark = pytest.mark.e2e


def token_of(info: dict[str, object]) -> str:
    return str(info["url"]).split("token=")[1]


def up_json(tether: Tether, name: str, *extra: str) -> dict[str, object]:
    res = tether("up", name, "--no-browser", "--json", *extra)
    assert res.rc == 0, res.err
    data: dict[str, object] = json.loads(res.out)
    return data


@pytest.fixture
def down_after(tether: Tether) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        tether("down", name)


def test_parallel_ups_yield_one_server(
    tether: Tether, sshd: LocalSshd, jupyter_env: Path, down_after: list[str]
) -> None:
    tether.profile("tt-server", env=str(jupyter_env))
    down_after.append("tt-server")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jupyter_tether", "up", "tt-server", "--no-browser", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=180) for p in procs]
    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    infos = [json.loads(out) for out, _ in results]
    assert len({i["pid"] for i in infos}) == 1
    assert len({i["local_port"] for i in infos}) == 1
    assert sum(not i["reused"] for i in infos) == 1
    assert len(remote_procs(sshd.user, "jupyter-lab")) == 1


def test_profile_settings_reach_the_server(
    tether: Tether, sshd: LocalSshd, jupyter_env: Path, down_after: list[str]
) -> None:
    home = home_of(sshd.user)
    project = home / "tt-project"
    modules = home / "tt-modulefiles"
    for d in (project, modules):
        d.mkdir(exist_ok=True)
    (project / "marker.txt").write_text("here\n")
    (modules / "tethertest").write_text("#%Module1.0\nsetenv TETHER_MODULE_LOADED yes\n")
    if IS_ROOT:
        for path in (project, project / "marker.txt", modules, modules / "tethertest"):
            shutil.chown(path, sshd.user)
    tether.profile(
        "tt-server",
        env=str(jupyter_env),
        root_dir="~/tt-project",
        nice=7,
        env_vars={
            "TETHER_TEST_VAR": "a value with spaces; and $(no expansion)",
            "MODULEPATH": str(modules),
        },
        modules=["tethertest"],
    )
    down_after.append("tt-server")
    info = up_json(tether, "tt-server")
    token = token_of(info)
    # root_dir: the contents API lists the project directory.
    port = int(str(info["local_port"]))
    code, body = jupyter_api.request(port, "GET", "/api/contents", token)
    assert code == 200
    assert "marker.txt" in [e["name"] for e in json.loads(body)["content"]]
    # nice level of the server process
    ni = subprocess.run(
        ["ps", "-o", "ni=", "-p", str(info["pid"])], capture_output=True, text=True, check=True
    )
    assert ni.stdout.strip() == "7"
    # env_vars (quoted, never expanded) and the module's effect reach the kernel.
    got = run_in_kernel(
        port,
        token,
        "import os; print(os.environ['TETHER_TEST_VAR'] + '|' + "
        "os.environ.get('TETHER_MODULE_LOADED', 'no'))",
    )
    assert got == "a value with spaces; and $(no expansion)|yes"


def test_failed_module_load_reports_the_log(
    tether: Tether, sshd: LocalSshd, jupyter_env: Path
) -> None:
    tether.profile("tt-server", env=str(jupyter_env), modules=["no-such-module-xyz"])
    res = tether("up", "tt-server", "--no-browser")
    assert res.rc == ExitCode.SERVER_START, res.err
    assert "module load no-such-module-xyz" in res.err
    assert state.load("tt-server") is None
    assert not remote_procs(sshd.user, "jupyter")


def test_verbose_shows_ssh_and_timings_but_never_the_token(
    tether: Tether, sshd: LocalSshd, jupyter_env: Path, down_after: list[str]
) -> None:
    tether.profile("tt-server", env=str(jupyter_env))
    down_after.append("tt-server")
    res = tether("up", "tt-server", "--no-browser", "-v")
    assert res.rc == 0, res.err
    token = res.out.strip().split("token=")[1]
    assert "run: ssh " in res.err
    assert "probe took" in res.err
    assert token not in res.err
    logs = tether("logs", "tt-server", "-n", "200")
    assert logs.rc == 0
    assert "Jupyter Server" in logs.out
    assert token not in logs.out


def test_open_restores_a_lost_forward_on_the_same_port(
    tether: Tether, tether_home: Path, sshd: LocalSshd, jupyter_env: Path, down_after: list[str]
) -> None:
    tether.profile("tt-server", env=str(jupyter_env))
    down_after.append("tt-server")
    info = up_json(tether, "tt-server")
    port, token = int(str(info["local_port"])), token_of(info)
    # The master (and with it the forward) goes away, as after a network drop.
    kill_masters(Path(os.environ["JUPYTER_TETHER_RUNTIME_DIR"]))
    assert jupyter_api.status(port, token, timeout=2) is None
    res = tether("open", "tt-server", "--no-browser", "--json")
    assert res.rc == 0, res.err
    again = json.loads(res.out)
    assert again["local_port"] == port
    assert jupyter_api.status(port, token) is not None
    # The server itself was never restarted.
    assert up_json(tether, "tt-server")["pid"] == info["pid"]


def test_open_unknown_server(tether: Tether) -> None:
    res = tether("open", "never-started")
    assert res.rc == ExitCode.NOT_FOUND
    assert "tether up never-started" in res.err


def test_config_shows_the_resolved_profile(tether: Tether) -> None:
    tether.profile("aura", ssh="me@aura.example.edu", nice=3, modules=["python/3.11"])
    res = tether("config", "aura", "--json", "--app", "notebook")
    assert res.rc == 0, res.err
    data = json.loads(res.out)
    assert data["ssh"] == "me@aura.example.edu"
    assert data["app"] == "notebook"
    assert data["nice"] == 3
    assert data["modules"] == ["python/3.11"]
    tether.profile("aura", ssh="me@aura.example.edu", env_vars={"A": "1 2"})
    text = tether("config", "aura")
    assert 'ssh = "me@aura.example.edu"' in text.out
    assert "[hosts.aura]" in text.out
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib

    parsed = tomllib.loads(text.out)["hosts"]["aura"]  # what it prints is TOML
    assert parsed["env_vars"] == {"A": "1 2"}


@pytest.fixture(scope="module")
def no_streamlocal_sshd(
    sandbox_dir: Path, remote_user: str, client_key: Path, sandbox_ssh_config: object
) -> Iterator[str]:
    """An sshd that forbids forwarding to Unix sockets (AllowStreamLocalForwarding no)."""
    server = start_sshd(
        sandbox_dir / "sshd-nostream",
        users=[remote_user],
        client_key=client_key,
        extra_config=["AllowStreamLocalForwarding no"],
    )
    try:
        sandbox_ssh_config.add(  # type: ignore[attr-defined]
            host_entry(server, "tt-nostream", user=remote_user)
        )
        yield "tt-nostream"
    finally:
        stop_sshd(server)


def test_tcp_fallback_when_sshd_forbids_socket_forwarding(
    tether: Tether, no_streamlocal_sshd: str, jupyter_env: Path, down_after: list[str]
) -> None:
    tether.profile(no_streamlocal_sshd, env=str(jupyter_env))
    down_after.append(no_streamlocal_sshd)
    res = tether("up", no_streamlocal_sshd, "--no-browser", "--json")
    assert res.rc == 0, res.err
    info = json.loads(res.out)
    assert info["transport"] == "tcp"
    assert info["remote"].startswith("127.0.0.1:")
    # The real port, read back from Jupyter, is what the forward points at.
    port = int(info["remote"].split(":")[1])
    assert port > 0
    assert run_in_kernel(info["local_port"], token_of(info), "1+1") == "2"
    # A second up reuses it.
    again = up_json(tether, no_streamlocal_sshd)
    assert again["pid"] == info["pid"]


def test_forced_tcp_transport(
    tether: Tether, sshd: LocalSshd, jupyter_env: Path, down_after: list[str]
) -> None:
    tether.profile("tt-server", env=str(jupyter_env), transport="tcp")
    down_after.append("tt-server")
    info = up_json(tether, "tt-server")
    assert info["transport"] == "tcp"
    assert run_in_kernel(int(str(info["local_port"])), token_of(info), "2+3") == "5"


@pytest.mark.skipif(not IS_ROOT, reason="a pty for the test account needs a root sshd")
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_attach_shows_the_server_console(
    tether: Tether, tether_home: Path, sshd: LocalSshd, jupyter_env: Path, down_after: list[str]
) -> None:
    tether.profile("tt-server", env=str(jupyter_env))
    down_after.append("tt-server")
    up_json(tether, "tt-server")
    # Drive `tether attach` from a terminal: a local tmux session plays the user's terminal.
    sock = tether_home / "tmux.sock"
    env = {**os.environ, "TERM": "xterm"}
    cmd = f"{sys.executable} -m jupyter_tether attach tt-server"
    subprocess.run(
        ["tmux", "-S", str(sock), "new-session", "-d", "-x", "200", "-y", "50", cmd],
        env=env,
        check=True,
    )
    try:
        deadline = time.monotonic() + 30
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run(
                ["tmux", "-S", str(sock), "capture-pane", "-p", "-J", "-S", "-200"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            if "Jupyter Server" in screen:
                break
            time.sleep(0.2)
        assert "Jupyter Server" in screen, screen
    finally:
        subprocess.run(["tmux", "-S", str(sock), "kill-server"], check=False)


def test_login_shells(
    tether: Tether,
    sandbox_dir: Path,
    client_key: Path,
    jupyter_env: Path,
    sandbox_ssh_config: object,
) -> None:
    """Probe, agent and launch work whatever the account's login shell is."""
    if not IS_ROOT:
        pytest.skip("needs accounts with other login shells")
    shells = [s for s in ("/usr/bin/zsh", "/usr/bin/tcsh", "/usr/bin/dash") if Path(s).exists()]
    assert shells, "install zsh, tcsh and dash (scripts/setup.sh does)"
    users = []
    for shell in shells:
        user = f"tt-{Path(shell).name}"
        ensure_user(user, shell=shell)
        subprocess.run(["usermod", "-s", shell, user], check=True)
        users.append(user)
    server = start_sshd(sandbox_dir / "sshd-shells", users=users, client_key=client_key)
    try:
        for user in users:
            sandbox_ssh_config.add(  # type: ignore[attr-defined]
                host_entry(server, user, user=user)
            )
            # The shared JupyterLab env belongs to the test account; these accounts may
            # read and run it, which is all a `env = ...` profile needs.
            tether.profile(user, env=str(jupyter_env), root_dir="/tmp")
            try:
                info = up_json(tether, user)
                assert info["state"] == "running"
                got = run_in_kernel(
                    int(str(info["local_port"])),
                    token_of(info),
                    "import os; print(os.environ['USER'])",
                )
                assert got == user
            finally:
                assert tether("down", user).rc == 0
    finally:
        stop_sshd(server)
