"""Faults that real servers produce, against a real sshd and Jupyter: an
account reset under a running supervisor, a second workstation that runs `down` or
shares the server, and a /tmp cleaner over a running server. SECURITY.md's robustness
section lists these cases.

The second workstation is a second state directory, runtime directory (so its own
ControlMaster), ssh config and key, run as its own process: everything a second laptop
has of its own except the local account (the test's Python lives where another local
account may not read it).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_tether import jupyter_api, supervisor
from jupyter_tether.proc import pid_alive
from testing.accounts import ensure_user
from testing.envs import make_jupyter_env
from testing.helpers.cli import Run, Tether
from testing.helpers.jupyter import new_kernel, run_on
from testing.sshd import generate_key, host_entry, start_sshd, stop_sshd, write_ssh_config
from tests.conftest import IS_ROOT, LocalSshd, SandboxSshConfig
from tests.helpers import remote_procs

pytestmark = pytest.mark.e2e

NAME = "tt-server"
RESET_USER = "tether-reset"


def up_json(run: Callable[..., Run], name: str, *more: str) -> dict[str, Any]:
    res = run("up", name, "--no-browser", "--json", *more)
    assert res.rc == 0, res.err
    data: dict[str, Any] = json.loads(res.out)
    return data


def token_of(info: dict[str, Any]) -> str:
    return str(info["url"]).split("token=")[1]


def ls_row(run: Callable[..., Run], name: str) -> dict[str, Any]:
    res = run("ls", "--json")
    assert res.rc == 0, res.err
    rows = [r for r in json.loads(res.out) if r["name"] == name]
    assert len(rows) == 1, res.out
    row: dict[str, Any] = rows[0]
    return row


def wait_for(what: str, probe: Callable[[], Any], seconds: float) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"not within {seconds:.0f} s: {what}")


def supervisor_state(state_dir: Path, name: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((state_dir / "supervisors" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


@dataclasses.dataclass
class Workstation:
    """The CLI of a second workstation, in a process of its own."""

    env: dict[str, str]
    state_dir: Path

    def __call__(self, *argv: str) -> Run:
        res = subprocess.run(
            [sys.executable, "-m", "jupyter_tether", *argv],
            capture_output=True,
            text=True,
            env=self.env,
            stdin=subprocess.DEVNULL,
            timeout=300,
            check=False,
        )
        return Run(res.returncode, res.stdout, res.stderr)


@pytest.fixture
def second(tmp_path: Path, sshd: LocalSshd) -> Iterator[Workstation]:
    """A second workstation for ``tt-server``: own key (added to the account's
    authorized keys), own ssh config, state and runtime directories."""
    home = tmp_path / "ws2"
    key = generate_key(home / "ssh" / "id_ed25519", comment="tether-test-ws2")
    keys = sshd.server.workdir / "authorized_keys" / sshd.user
    before = keys.read_text()
    keys.write_text(before + Path(f"{key}.pub").read_text())
    entry = dataclasses.replace(host_entry(sshd.server, NAME, user=sshd.user), identity_file=key)
    config = write_ssh_config(home / "ssh" / "config", [entry])
    runtime = Path(tempfile.mkdtemp(prefix="ttw-", dir="/tmp"))
    env = dict(
        os.environ,
        JUPYTER_TETHER_STATE_DIR=str(home / "state"),
        JUPYTER_TETHER_CACHE_DIR=str(home / "cache"),
        JUPYTER_TETHER_RUNTIME_DIR=str(runtime),
        JUPYTER_TETHER_SSH_CONFIG=str(config),
    )
    ws = Workstation(env, home / "state")
    try:
        yield ws
    finally:
        for status in (home / "state" / "supervisors").glob("*.json"):
            name = status.stem
            with_env = dict(os.environ)
            os.environ.update(env)
            try:
                supervisor.stop(name)
            finally:
                os.environ.clear()
                os.environ.update(with_env)
        for sock in (runtime / "cm").glob("*"):
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "placeholder"],
                capture_output=True,
                timeout=10,
                check=False,
            )
        shutil.rmtree(runtime, ignore_errors=True)
        keys.write_text(before)


def test_down_on_another_workstation_is_a_stop_not_a_crash(
    tether: Tether, second: Workstation, sshd: LocalSshd, jupyter_env: Path
) -> None:
    tether.profile(NAME, env=str(jupyter_env))
    try:
        mine = up_json(tether, NAME)
        theirs = up_json(second, NAME)
        assert theirs["reused"] and theirs["pid"] == mine["pid"]
        state_dir = Path(os.environ["JUPYTER_TETHER_STATE_DIR"])
        pid = int(mine["supervisor"])
        res = second("down", NAME)
        assert res.rc == 0, res.err
        # The first workstation's supervisor says who stopped it and ends; it never
        # starts the server again.
        last = wait_for(
            "the supervisor reports the stop",
            lambda: (s := supervisor_state(state_dir, NAME)).get("state") == "stopped" and s,
            30,
        )
        assert "stopped by `tether down` on " in last["detail"], last
        assert "@" in last["detail"], last
        assert last["revives"] == 0, last
        wait_for("the supervisor exits", lambda: not pid_alive(pid), 15)
        assert not remote_procs(sshd.user, "jupyter-lab")
        row = ls_row(tether, NAME)
        assert row["state"] == "stopped", row
        assert "stopped by `tether down`" in str(row["detail"]), row
        assert row["tunnel"]["state"] == "stopped", row
        opened = tether("open", NAME, "--no-browser")
        assert opened.rc != 0
        assert "stopped by `tether down`" in opened.err, opened.err
        # `up` starts it again; the marker goes with the new start.
        again = up_json(tether, NAME)
        assert not again["reused"]
        assert jupyter_api.status(int(again["local_port"]), token_of(again)) is not None
        assert ls_row(tether, NAME)["state"] == "running"
    finally:
        tether("down", NAME)


def test_two_workstations_share_one_server_for_twenty_rounds(
    tether: Tether, second: Workstation, sshd: LocalSshd, jupyter_env: Path
) -> None:
    tether.profile(NAME, env=str(jupyter_env))
    rounds = int(os.environ.get("TETHER_ROUNDS", "20"))
    try:
        first = up_json(tether, NAME)
        pid = first["pid"]
        for k in range(rounds):
            infos = [up_json(tether, NAME), up_json(second, NAME)]
            for run in (tether, second):
                res = run("open", NAME, "--no-browser", "--json")
                assert res.rc == 0, f"round {k}: {res.err}"
                infos.append(json.loads(res.out))
            assert all(i.get("pid", pid) == pid for i in infos), (k, infos)
            rows = [ls_row(tether, NAME), ls_row(second, NAME)]
            assert all(r["state"] == "running" for r in rows), (k, rows)
            for info in infos[:2]:
                assert jupyter_api.status(int(info["local_port"]), token_of(info)) is not None, k
            assert len(remote_procs(sshd.user, "jupyter-lab")) == 1, k
    finally:
        tether("down", NAME)


def kill_server(user: str) -> None:
    """Everything of the server gone at once (its watchdog too), the account's ssh
    sessions left alone: what a reboot does, with the link kept."""
    for pattern in ("run.sh", "jupyter"):
        subprocess.run(["pkill", "-KILL", "-u", user, "-f", pattern], check=False)
    deadline = time.monotonic() + 10
    while remote_procs(user, "jupyter-lab") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not remote_procs(user, "jupyter-lab")


def test_starts_at_once_from_two_workstations_and_a_revival_make_one_server(
    tether: Tether, second: Workstation, sshd: LocalSshd, jupyter_env: Path
) -> None:
    tether.profile(NAME, env=str(jupyter_env))
    state_dir = Path(os.environ["JUPYTER_TETHER_STATE_DIR"])
    try:
        up_json(tether, NAME)
        up_json(second, NAME)
        for k in range(3):
            kill_server(sshd.user)
            # Both workstations start it while the first one's supervisor revives it.
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                mine = pool.submit(
                    Workstation(dict(os.environ), state_dir), "up", NAME, "--json", "--no-browser"
                )
                theirs = pool.submit(second, "up", NAME, "--json", "--no-browser")
                runs = [mine.result(timeout=300), theirs.result(timeout=300)]
            assert all(r.rc == 0 for r in runs), (k, [r.err for r in runs])
            infos = [json.loads(r.out) for r in runs]
            assert infos[0]["pid"] == infos[1]["pid"], (k, infos)
            assert len(remote_procs(sshd.user, "jupyter-lab")) == 1, k
            for info in infos:
                assert jupyter_api.status(int(info["local_port"]), token_of(info)) is not None
            last = wait_for(
                f"round {k}: the supervisor is connected again",
                lambda: (s := supervisor_state(state_dir, NAME)).get("state") == "connected" and s,
                20,
            )
            assert last["revives"] <= k + 1, last  # at most its own start, never a crash
    finally:
        tether("down", NAME)


# --------------------------------------------------------------------------- account reset


@pytest.fixture
def reset_account(
    tether: Tether, sandbox_dir: Path, sandbox_ssh_config: SandboxSshConfig, client_key: Path
) -> Iterator[tuple[str, Path]]:
    """An account ``tether-reset`` on its own sshd (alias ``tt-reset``) with JupyterLab
    outside its home, so a reset of the home leaves the environment; root only."""
    if not IS_ROOT:
        pytest.skip("resetting an account needs root")
    pw = ensure_user(RESET_USER)
    env = make_jupyter_env(RESET_USER, sandbox_dir / "reset-jlab")
    server = start_sshd(sandbox_dir / "sshd-reset", users=[RESET_USER], client_key=client_key)
    try:
        sandbox_ssh_config.add(host_entry(server, "tt-reset", user=RESET_USER))
        yield pw.pw_name, env
    finally:
        tether("down", "tt-reset")
        stop_sshd(server)


def reset(user: str) -> None:
    """What an administrator's account reset does: every process of the account killed,
    its home removed and created again, empty."""
    pw = pwd.getpwnam(user)
    deadline = time.monotonic() + 20
    while remote_procs(user, "") and time.monotonic() < deadline:
        subprocess.run(["pkill", "-KILL", "-u", user], check=False)
        time.sleep(0.1)
    assert not remote_procs(user, ""), remote_procs(user, "")
    shutil.rmtree(pw.pw_dir)
    os.mkdir(pw.pw_dir, 0o755)
    os.chown(pw.pw_dir, pw.pw_uid, pw.pw_gid)


def test_up_after_an_account_reset_under_a_running_supervisor(
    tether: Tether, reset_account: tuple[str, Path]
) -> None:
    user, env = reset_account
    tether.profile("tt-reset", env=str(env))
    state_dir = Path(os.environ["JUPYTER_TETHER_STATE_DIR"])
    info = up_json(tether, "tt-reset")
    for k in range(int(os.environ.get("TETHER_RESETS", "10"))):
        reset(user)
        # Hit the supervisor at different moments of its repair: at once, while it
        # notices, while it asks the server.
        time.sleep((0.0, 0.7, 1.5, 3.0)[k % 4])
        info = up_json(tether, "tt-reset")
        assert not info["reused"], k
        assert jupyter_api.status(int(info["local_port"]), token_of(info)) is not None, k
        assert len(remote_procs(user, "jupyter-lab")) == 1, k
        wait_for(
            f"round {k}: the supervisor is connected again",
            lambda: supervisor_state(state_dir, "tt-reset").get("state") == "connected",
            20,
        )
    kernel = new_kernel(int(info["local_port"]), token_of(info))
    assert run_on(int(info["local_port"]), token_of(info), kernel, "print(6 * 7)").strip() == "42"


# --------------------------------------------------------------------------- /tmp cleaners


def run_dir(info: dict[str, Any]) -> Path:
    sock = Path(str(info["remote"]))
    assert sock.is_absolute(), info
    return sock.parent


def all_marked(rundir: Path) -> bool:
    files = [p for p in rundir.rglob("*") if not p.is_dir()]
    return bool(files) and all(p.lstat().st_mode & 0o1000 for p in files)


def back_date(*roots: Path) -> None:
    """Make everything under ``roots`` look untouched for 20 days (atime and mtime)."""
    stamp = time.time() - 20 * 86400
    for root in roots:
        for path in [root, *root.rglob("*")]:
            os.utime(path, (stamp, stamp), follow_symlinks=False)


@pytest.mark.skipif(not IS_ROOT, reason="the cleaners run as root, as they do on a server")
@pytest.mark.parametrize("cleaner", ["systemd-tmpfiles", "tmpreaper"])
def test_an_age_based_tmp_cleaner_leaves_a_running_server_alone(
    tether: Tether, sshd: LocalSshd, jupyter_env: Path, tmp_path: Path, cleaner: str
) -> None:
    if not shutil.which(cleaner):
        pytest.skip(f"{cleaner} is not installed (scripts/setup.sh installs it)")
    tether.profile(NAME, env=str(jupyter_env))
    try:
        info = up_json(tether, NAME)
        port, token = int(info["local_port"]), token_of(info)
        kernel = new_kernel(port, token)
        assert run_on(port, token, kernel, "x = 'kept'; print(x)").strip() == "kept"
        rundir = run_dir(info)
        base = rundir.parent
        # run.sh marks what is in the run dir, the kernel's ipc sockets included.
        wait_for("every file in the run dir is marked sticky", lambda: all_marked(rundir), 45)
        # A file of the same age outside the run dir: the cleaner must remove that one.
        litter = base / "litter"
        litter.write_text("old\n")
        back_date(base)
        if cleaner == "systemd-tmpfiles":
            # RHEL's "q /tmp 1777 root root 10d", aimed at the run dirs' parent only (the
            # rest of this machine's /tmp is not the test's); "am:" because back-dating
            # cannot move a file's ctime.
            conf = tmp_path / "tmp.conf"
            conf.write_text(f"e {base} - - - am:10d\n")
            argv = ["systemd-tmpfiles", "--clean", str(conf)]
        else:
            # tmpreaper goes by atime: run.sh touches the run dir again within 20 s.
            rundir_file = rundir / "run.pid"
            wait_for(
                "run.sh touches the run dir again",
                lambda: time.time() - rundir_file.stat().st_atime < 60,
                45,
            )
            argv = ["tmpreaper", "--all", "10d", str(base)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert not litter.exists(), f"{cleaner} did not run: the old file is still there"
        assert Path(str(info["remote"])).is_socket()
        assert all_marked(rundir)
        assert jupyter_api.status(port, token) is not None
        assert run_on(port, token, kernel, "print(x)").strip() == "kept"
    finally:
        tether("down", NAME)


def test_a_removed_socket_is_said_plainly_and_up_starts_the_server_again(
    tether: Tether, sshd: LocalSshd, jupyter_env: Path
) -> None:
    tether.profile(NAME, env=str(jupyter_env))
    state_dir = Path(os.environ["JUPYTER_TETHER_STATE_DIR"])
    try:
        info = up_json(tether, NAME)
        port, token = int(info["local_port"]), token_of(info)
        kernel = new_kernel(port, token)
        cell = "open('tt-kept.txt', 'w').write('kept'); print('written')"
        assert run_on(port, token, kernel, cell).strip() == "written"
        Path(str(info["remote"])).unlink()  # what a cleaner without our marks would do
        last = wait_for(
            "the supervisor gives up with a reason",
            lambda: (s := supervisor_state(state_dir, NAME)).get("state") == "failed" and s,
            30,
        )
        assert "socket" in last["detail"] and "kernels' state" in last["detail"], last
        assert "`tether up tt-server`" in last["detail"], last
        row = ls_row(tether, NAME)
        assert row["state"] == "orphaned", row
        assert len(remote_procs(sshd.user, "jupyter-lab")) == 1  # it runs, unreachable
        again = up_json(tether, NAME)
        assert not again["reused"]
        assert int(again["local_port"]) == port  # the open tab's address
        assert len(remote_procs(sshd.user, "jupyter-lab")) == 1
        code, body = jupyter_api.request(
            port, "GET", "/api/contents/tt-kept.txt?content=1", token_of(again)
        )
        assert code == 200 and json.loads(body)["content"] == "kept"
        assert (
            jupyter_api.request(port, "DELETE", "/api/contents/tt-kept.txt", token_of(again))[0]
            == 204
        )
        wait_for(
            "the supervisor is connected again",
            lambda: supervisor_state(state_dir, NAME).get("state") == "connected",
            20,
        )
    finally:
        tether("down", NAME)
