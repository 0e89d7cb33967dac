"""`tether mount`'s pure parts: sshfs's argv (through the real sshfs's own parsing), the
server's directory, the mount point checks, the missing-tool errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from jupyter_tether import cli, completion, state
from jupyter_tether import mount as mounts
from jupyter_tether.commands import mount as mount_cmd
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.ssh import Target

CONTROL = Path("/run/user/1000/jupyter-tether/cm")


def test_sshfs_ssh_rides_the_master_and_never_prompts() -> None:
    target = Target("aura", config_file=Path("/home/me/ssh.conf"), control_dir=CONTROL)
    argv = mounts.sshfs_argv("sshfs", target, "/home/me/proj", Path("/mnt/aura"))
    assert argv[:5] == ["sshfs", "aura:/home/me/proj", "/mnt/aura", "-F", "/home/me/ssh.conf"]
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert f"ControlPath={CONTROL}/%C" in options
    assert {"ControlMaster=no", "BatchMode=yes", "reconnect", "idmap=user"} <= set(options)
    assert "ServerAliveInterval=15" in options
    assert not any("allow_other" in o or "password" in o or "ssh_command" in o for o in options)


def test_no_token_in_argv(tmp_path: Path) -> None:
    token = "f00dfeed" * 6
    state.save(
        state.Record(
            name="aura",
            ssh="me@aura.example.edu",
            ssh_config=None,
            token=token,
            local_port=40213,
            remote="/tmp/x/jupyter.sock",
            app="lab",
            pid=1,
            hostname="aura",
            started=time.time(),
        )
    )
    target = mount_cmd._target("aura", None)
    argv = mounts.sshfs_argv("sshfs", target, "/home/me", tmp_path / "m")
    assert argv[1] == "me@aura.example.edu:/home/me"
    assert token not in " ".join(argv)


def test_ssh_url_becomes_host_and_port() -> None:
    target = Target("ssh://me@aura:2222", control_dir=CONTROL)
    argv = mounts.sshfs_argv("sshfs", target, "/srv", Path("/mnt/a"))
    assert argv[1] == "me@aura:/srv"
    assert argv[argv.index("-p") + 1] == "2222"


@pytest.mark.skipif(shutil.which("sshfs") is None, reason="sshfs is not installed")
def test_the_real_sshfs_hands_its_ssh_the_same_options(tmp_path: Path) -> None:
    """Paths with spaces, commas and backslashes survive libfuse's parsing:
    a stand-in ``ssh`` on PATH records the argv the real sshfs runs it with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "argv.json"
    fake = bin_dir / "ssh"
    fake.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"json.dump(sys.argv[1:], open({str(seen)!r}, 'w'))\nsys.exit(1)\n"
    )
    fake.chmod(0o755)
    odd = tmp_path / "a b,c\\d"
    target = Target("aura", config_file=odd / "config", control_dir=odd / "cm")
    local = tmp_path / "mnt"
    local.mkdir()
    argv = mounts.sshfs_argv(shutil.which("sshfs") or "sshfs", target, "/srv", local)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    subprocess.run(argv, env=env, capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    got = json.loads(seen.read_text())
    assert f"-F{odd / 'config'}" in got
    assert f"-oControlPath={odd}/cm/%C" in got
    assert {"-oControlMaster=no", "-oBatchMode=yes", "-oConnectTimeout=20"} <= set(got)


def test_remote_dir_under_root_dir_unless_absolute() -> None:
    assert mounts.remote_dir_expr("~", None) == '"$HOME"'
    assert mounts.remote_dir_expr("~/projects", None) == '"$HOME"/projects'
    assert mounts.remote_dir_expr("~/projects", "a b") == "\"$HOME\"/'projects/a b'"
    assert mounts.remote_dir_expr("~/projects", "/scratch/me") == "/scratch/me"
    assert mounts.remote_dir_expr("/data", "x") == "/data/x"
    assert mounts.remote_dir_expr("~", "~/other") == '"$HOME"/other'
    with pytest.raises(TetherError) as err:
        mounts.remote_dir_expr("~bob/x", None)
    assert err.value.code == ExitCode.USAGE


def test_the_resolve_script_runs_in_sh(tmp_path: Path) -> None:
    (tmp_path / "a b").mkdir()
    script = mounts.resolve_remote_script(mounts.remote_dir_expr("~", "a b"))
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    res = subprocess.run(["sh", "-s"], input=script, env=env, capture_output=True, text=True)
    assert (res.returncode, res.stdout.strip()) == (0, str((tmp_path / "a b").resolve()))
    script = mounts.resolve_remote_script(mounts.remote_dir_expr("~", "missing"))
    res = subprocess.run(["sh", "-s"], input=script, env=env, capture_output=True, text=True)
    assert res.returncode == 3


def test_mount_point_is_new_or_empty(tmp_path: Path) -> None:
    new = mounts.check_mountpoint(tmp_path / "new" / "dir")
    assert new.is_dir() and new.stat().st_mode & 0o777 == 0o700
    assert mounts.check_mountpoint(new) == new  # empty: fine
    (new / "f").write_text("mine")
    with pytest.raises(TetherError, match="not empty"):
        mounts.check_mountpoint(new)
    with pytest.raises(TetherError, match="not a directory"):
        mounts.check_mountpoint(new / "f")
    assert (new / "f").read_text() == "mine"


def test_mount_table_unescapes_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "my mnt"
    local.mkdir()
    table = tmp_path / "mounts"
    escaped = str(local.resolve()).replace(" ", "\\040")
    table.write_text(f"proc /proc proc rw 0 0\nme@aura:/x {escaped} fuse.sshfs rw 0 0\n")
    monkeypatch.setattr(mounts, "MOUNTS_TABLE", table)
    assert mounts.mounted_at(local) == "fuse.sshfs"
    assert mounts.mounted_at(tmp_path) is None
    with pytest.raises(TetherError, match="already mounted"):
        mounts.check_mountpoint(local)


def test_missing_sshfs_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no sshfs, for real
    with pytest.raises(TetherError) as err:
        mounts.check_tools()
    assert err.value.code == ExitCode.ERROR
    assert err.value.hint and "apt install sshfs" in err.value.hint


@pytest.mark.skipif(shutil.which("sshfs") is None, reason="sshfs is not installed")
def test_missing_fuse_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A machine without /dev/fuse (a container without --device) can't be made here.
    monkeypatch.setattr(mounts, "FUSE_DEVICE", tmp_path / "fuse")
    with pytest.raises(TetherError, match="FUSE") as err:
        mounts.check_tools()
    assert err.value.hint and "/dev/fuse" in err.value.hint


def test_cli_umount_without_mounts_and_completion_lists_the_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["umount", "aura"]) == 0
    assert "no mounts of aura" in capsys.readouterr().out
    assert cli.main(["mount", "aura", "/nonexistent-dir", "--unmount"]) == ExitCode.NOT_FOUND
    names = {c.name for c in completion.commands(cli.build_parser())}
    assert {"mount", "umount"} <= names
