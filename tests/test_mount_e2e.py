"""`tether mount` against a real sshd with the real sshfs and FUSE: files both ways
through the mount, over tether's master; unmount; a non-empty directory refused."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_tether import mount as mounts
from testing.helpers.cli import Tether
from tests.conftest import LocalSshd

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path("/dev/fuse").exists(), reason="no /dev/fuse on this machine"),
    pytest.mark.skipif(shutil.which("sshfs") is None, reason="sshfs is not installed"),
]

NAME = "tt-server"
REMOTE = "tt-mount-proj"


def in_mount_table(local: Path) -> bool:
    where = os.path.realpath(local)
    return any(
        line.split()[1] == where for line in Path("/proc/self/mounts").read_text().splitlines()
    )


def logins_so_far(sshd: LocalSshd) -> int:
    return sshd.server.log.read_text().count("Accepted publickey")


def on_server(sshd: LocalSshd, command: str) -> str:
    res = sshd.ssh_config.ssh(NAME, command)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture
def mountpoint(tether: Tether, sshd: LocalSshd, tmp_path: Path) -> Iterator[Path]:
    tether.profile(NAME)
    on_server(sshd, f"rm -rf {REMOTE} && mkdir {REMOTE}")
    local = tmp_path / "mnt"
    yield local
    if in_mount_table(local):  # a failed test must not leave a mount behind
        mounts.unmount(local)


def test_mount_both_ways_over_the_master_then_unmount(
    tether: Tether, sshd: LocalSshd, mountpoint: Path
) -> None:
    local = mountpoint
    logins = logins_so_far(sshd)
    res = tether("mount", NAME, str(local), "--remote", REMOTE)
    assert res.rc == 0, res.err
    assert in_mount_table(local)
    # One login: the master's. sshfs's ssh rode it (a 2FA prompt would not come again).
    assert logins_so_far(sshd) == logins + 1
    assert "not a backup" in res.out and f"tether sync {NAME}" in res.out
    record = Path(os.environ["JUPYTER_TETHER_STATE_DIR"]) / "mounts" / f"{NAME}.json"
    assert record.stat().st_mode & 0o777 == 0o600

    # The ssh under sshfs is a client of tether's master, on its ControlPath.
    runtime = os.environ["JUPYTER_TETHER_RUNTIME_DIR"]
    ssh_argvs = [
        Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        for pid in os.listdir("/proc")
        if pid.isdigit() and _is_sftp_ssh(pid)
    ]
    assert ssh_argvs, "no ssh under sshfs"
    assert all(f"-oControlPath={runtime}/cm/%C".encode() in a for a in ssh_argvs)
    assert all(b"-oControlMaster=no" in a and b"-oBatchMode=yes" in a for a in ssh_argvs)

    # Written here, through the mount: on the server.
    (local / "here.txt").write_text("from the workstation\n")
    assert on_server(sshd, f"cat {REMOTE}/here.txt") == "from the workstation\n"
    # Made on the server: in the mount.
    on_server(sshd, f"echo from the server > {REMOTE}/there.txt")
    assert (local / "there.txt").read_text() == "from the server\n"

    res = tether("umount", NAME, str(local))
    assert res.rc == 0, res.err
    assert "unmounted" in res.out
    assert not in_mount_table(local)
    assert local.is_dir() and list(local.iterdir()) == []
    assert not record.exists()
    # The files are the server's: still there.
    assert on_server(sshd, f"ls {REMOTE}").split() == ["here.txt", "there.txt"]


def _is_sftp_ssh(pid: str) -> bool:
    """An ssh that runs the sftp subsystem: sshfs's (it outlives sshfs's first process,
    which daemonized, so its parent is not sshfs any more)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.path.basename(argv[0]) == b"ssh" and argv[-2] == b"sftp" and b"-s" in argv


def test_refuses_a_non_empty_directory(tether: Tether, sshd: LocalSshd, mountpoint: Path) -> None:
    mountpoint.mkdir()
    (mountpoint / "mine.txt").write_text("keep me\n")
    res = tether("mount", NAME, str(mountpoint), "--remote", REMOTE)
    assert res.rc == 1 and "not empty" in res.err
    assert not in_mount_table(mountpoint)
    assert (mountpoint / "mine.txt").read_text() == "keep me\n"


def test_down_unmounts_what_mount_made(tether: Tether, sshd: LocalSshd, mountpoint: Path) -> None:
    res = tether("mount", NAME, str(mountpoint), "--remote", REMOTE)
    assert res.rc == 0, res.err
    res = tether("down", NAME)
    # No server runs for the profile (9), but its mount goes all the same.
    assert res.rc == 9, res.err
    assert f"unmounted {mountpoint}" in res.out
    assert not in_mount_table(mountpoint)
