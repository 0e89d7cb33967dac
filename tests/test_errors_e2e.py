"""Failures of `tether up`: a clear message, a documented exit code, nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from jupyter_tether import state
from jupyter_tether.errors import ExitCode
from testing.helpers.cli import Run, Tether
from testing.helpers.users import as_user, home_of
from testing.sshd import generate_key, host_entry, write_ssh_config
from tests.conftest import IS_ROOT, LocalSshd
from tests.helpers import remote_procs, run_isolated

pytestmark = pytest.mark.e2e


def assert_clean(tether_home: Path, sshd: LocalSshd, name: str) -> None:
    """Neither side keeps anything of a failed `up`."""
    assert state.load(name) is None
    assert not remote_procs(sshd.user, "jupyter")
    remote_servers = home_of(sshd.user) / ".local/state/jupyter-tether/servers"
    assert not (remote_servers / name).exists()
    cm = Path(os.environ["JUPYTER_TETHER_RUNTIME_DIR"]) / "cm"
    leftovers = [p for p in cm.iterdir() if p.is_socket()] if cm.is_dir() else []
    assert not leftovers, f"ssh master left running: {leftovers}"


def assert_failed(res: Run, code: ExitCode, *words: str) -> None:
    assert res.rc == code, (res.rc, res.err)
    text = res.err.lower()
    assert "error:" in text and "hint:" in text, res.err
    for word in words:
        assert word.lower() in text, res.err
    assert "traceback" not in text


@pytest.mark.netns
@pytest.mark.skipif(not IS_ROOT, reason="an isolated network namespace needs root")
def test_unknown_host(tether_home: Path, sshd: LocalSshd) -> None:
    """Name resolution fails for real, in a namespace with no network at all, so that
    the lookup never leaves this machine."""
    res = run_isolated(["up", "no-such-host.example", "--no-browser"])
    assert_failed(
        res,
        ExitCode.SSH_CONNECT,
        "unknown host",
        "no-such-host.example",
    )
    assert state.load("no-such-host.example") is None


def test_auth_failure(
    tether: Tether, tether_home: Path, sshd: LocalSshd, jupyter_env: Path
) -> None:
    stranger = generate_key(tether_home / "stranger", comment="not authorized")
    entry = host_entry(sshd.server, "tt-stranger", user=sshd.user)
    sshd.ssh_config.add(entry.__class__(**{**entry.__dict__, "identity_file": stranger}))
    tether.profile("tt-stranger", env=str(jupyter_env))
    res = tether("up", "tt-stranger", "--no-browser")
    assert_failed(res, ExitCode.SSH_AUTH, "permission denied", "publickey", "ssh-add")
    assert_clean(tether_home, sshd, "tt-stranger")


def test_json_error_is_one_object_on_stdout(
    tether: Tether, tether_home: Path, sshd: LocalSshd, jupyter_env: Path
) -> None:
    """With --json a failing `up` prints one JSON error object on stdout (and the
    human-readable text on stderr), with the documented exit code in it."""
    stranger = generate_key(tether_home / "stranger-json", comment="not authorized")
    entry = host_entry(sshd.server, "tt-stranger-json", user=sshd.user)
    sshd.ssh_config.add(entry.__class__(**{**entry.__dict__, "identity_file": stranger}))
    tether.profile("tt-stranger-json", env=str(jupyter_env))
    res = tether("up", "tt-stranger-json", "--no-browser", "--json")
    assert_failed(res, ExitCode.SSH_AUTH, "permission denied")
    answer = json.loads(res.out)
    assert answer["code"] == res.rc == int(ExitCode.SSH_AUTH)
    assert "permission denied" in answer["error"].lower()
    assert "ssh-add" in answer["hint"]
    assert_clean(tether_home, sshd, "tt-stranger-json")


def test_jupyter_missing_on_server(tether: Tether, tether_home: Path, sshd: LocalSshd) -> None:
    """The profile's environment exists but has no Jupyter in it."""
    bare = home_of(sshd.user) / "tt-bare-venv"
    made = as_user(sshd.user, ["/usr/bin/python3", "-m", "venv", "--without-pip", str(bare)])
    assert made.returncode == 0, made.stderr
    tether.profile("tt-server", env="~/tt-bare-venv")
    res = tether("up", "tt-server", "--no-browser")
    assert_failed(res, ExitCode.REMOTE_ENV, "no jupyter", "~/tt-bare-venv", "install jupyterlab")
    assert_clean(tether_home, sshd, "tt-server")


def test_env_without_jupyter(tether: Tether, tether_home: Path, sshd: LocalSshd) -> None:
    tether.profile("tt-server", env="~/no-such-env")
    res = tether("up", "tt-server", "--no-browser")
    assert_failed(res, ExitCode.REMOTE_ENV, "~/no-such-env")
    assert_clean(tether_home, sshd, "tt-server")


def test_bad_config_file(tether: Tether, tether_home: Path, sshd: LocalSshd) -> None:
    tether.config_path.parent.mkdir(parents=True, exist_ok=True)
    tether.config_path.write_text('[hosts.tt-server]\nenv = "~/jlab"\nnicee = 3\n')
    res = tether("up", "tt-server", "--no-browser")
    assert_failed(res, ExitCode.CONFIG, str(tether.config_path) + ":3", "nicee")
    assert_clean(tether_home, sshd, "tt-server")


def test_local_port_busy(
    tether: Tether, tether_home: Path, sshd: LocalSshd, jupyter_env: Path
) -> None:
    tether.profile("tt-server", env=str(jupyter_env))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = tether("up", "tt-server", "--no-browser", "--port", str(port))
    assert_failed(res, ExitCode.LOCAL_PORT, str(port), "busy")
    assert_clean(tether_home, sshd, "tt-server")


def test_autostart_is_refused_where_there_is_a_scheduler(
    tether: Tether, tether_home: Path, sshd: LocalSshd, jupyter_env: Path
) -> None:
    """A login node of a cluster: `sbatch` on the login PATH (Debian's ~/.profile puts
    ~/bin there) and the Slurm config its login shell names in SLURM_CONF. tether only
    looks them up, it never runs sbatch here."""
    home = home_of(sshd.user)
    bin_dir = home / "bin"
    assert not bin_dir.exists()
    profile = home / ".profile"
    saved_profile = profile.read_bytes() if profile.exists() else None
    script = '#!/bin/sh\necho "sbatch: error: this host is not a cluster" >&2\nexit 1\n'
    made = as_user(
        sshd.user,
        [
            "sh",
            "-c",
            "mkdir bin && cat > bin/sbatch && chmod 755 bin/sbatch && "
            "echo ClusterName=test > bin/slurm.conf && "
            "echo 'export SLURM_CONF=$HOME/bin/slurm.conf' >> .profile",
        ],
        input=script,
    )
    assert made.returncode == 0, made.stderr
    crontab = as_user(sshd.user, ["crontab", "-l"]).stdout
    try:
        seen = as_user(sshd.user, ["bash", "-lc", "command -v sbatch; echo $SLURM_CONF"])
        assert seen.stdout.split() == [str(bin_dir / "sbatch"), str(bin_dir / "slurm.conf")]
        tether.profile("tt-server", env=str(jupyter_env))
        res = tether("up", "tt-server", "--no-browser", "--autostart")
        assert_failed(res, ExitCode.USAGE, "batch scheduler", "autostart is refused", "batch jobs")
        assert_clean(tether_home, sshd, "tt-server")  # refused before anything started
        assert as_user(sshd.user, ["crontab", "-l"]).stdout == crontab  # no hook either
    finally:
        shutil.rmtree(bin_dir)
        if saved_profile is None:
            profile.unlink(missing_ok=True)
        else:
            profile.write_bytes(saved_profile)


def test_slurm_client_alone_is_no_cluster(
    tether: Tether, tether_home: Path, sshd: LocalSshd, jupyter_env: Path
) -> None:
    """Debian's slurm-client (scripts/setup.sh installs it) puts a real `sbatch` on every
    PATH here, with no Slurm config anywhere: no cluster, so autostart is not refused."""
    assert shutil.which("sbatch") == "/usr/bin/sbatch"
    assert not Path("/etc/slurm/slurm.conf").exists()
    try:
        tether.profile("tt-server", env=str(jupyter_env))
        res = tether("up", "tt-server", "--no-browser", "--autostart", "--json")
        assert res.rc == 0, res.err
        assert "jupyter-tether" in as_user(sshd.user, ["crontab", "-l"]).stdout
    finally:
        tether("down", "tt-server", "--purge")
    assert "jupyter-tether" not in as_user(sshd.user, ["crontab", "-l"]).stdout


@pytest.mark.skipif(IS_ROOT, reason="root may bind privileged ports")
def test_privileged_port(tether: Tether, tether_home: Path, sshd: LocalSshd) -> None:
    res = tether("up", "tt-server", "--no-browser", "--port", "80")
    assert_failed(res, ExitCode.LOCAL_PORT, "privileged")


def test_ssh_missing_is_plain_words(tether: Tether, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = Path(shutil.which("true") or "/bin/true").parent / "no-such-dir"
    monkeypatch.setenv("PATH", str(empty))
    res = tether("up", "tt-server", "--no-browser")
    assert_failed(res, ExitCode.ERROR, "ssh", "not installed")


def test_host_key_mismatch(tether: Tether, tether_home: Path, sshd: LocalSshd) -> None:
    """known_hosts pins another key for the server: a man in the middle, or a reinstall."""
    impostor = generate_key(tether_home / "impostor", comment="some other host")
    other_key = " ".join(Path(f"{impostor}.pub").read_text().split()[:2])
    entry = host_entry(sshd.server, "tt-impostor", user=sshd.user)
    config = write_ssh_config(
        tether_home / "impostor_config",
        [entry.__class__(**{**entry.__dict__, "host_public_key": other_key})],
    )
    res = tether("up", "tt-impostor", "--no-browser", "--ssh-config", str(config))
    assert_failed(res, ExitCode.SSH_AUTH, "host key", "ssh-keygen -R")
    assert_clean(tether_home, sshd, "tt-impostor")
