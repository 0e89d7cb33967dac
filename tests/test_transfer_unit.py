"""rsync for `tether sync`'s big transfers: when, with which argv, and the server's side
of a staged push. The copies run the real rsync, locally."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from jupyter_tether import probe, transfer
from jupyter_tether.remote import syncing
from jupyter_tether.remote.core import RemoteError
from jupyter_tether.ssh import Target

TARGET = Target("ada@aura", config_file=Path("/cfg dir/ssh config"), control_dir=Path("/run/cm"))
RSYNC = "/usr/bin/rsync"


def choice(files: int, size: int, **kw: object) -> transfer.Choice:
    args: dict[str, object] = {"target": TARGET, "here": RSYNC, "there": RSYNC, **kw}
    return transfer.choose(files=files, size=size, **args)  # type: ignore[arg-type]


def test_many_files_or_many_bytes_in_one_direction_go_by_rsync() -> None:
    assert choice(transfer.MANY_FILES, transfer.MANY_BYTES).how == "agent"
    assert choice(transfer.MANY_FILES + 1, 10).how == "rsync"
    assert choice(1, transfer.MANY_BYTES + 1).how == "rsync"
    assert choice(0, 0).how == "agent"


def test_without_rsync_on_either_side_or_a_master_the_agent_carries_it() -> None:
    assert choice(100, 0, here=None) == transfer.Choice("agent", "rsync is not installed here")
    assert choice(100, 0, there=None).why == "rsync is not installed on the server"
    unshared = Target("aura", control_dir=None)  # no ControlMaster (Windows)
    assert "no ssh master" in choice(100, 0, target=unshared).why
    for odd in ("ssh://ada@aura:2222", "[::1]:22", "host:path"):
        assert choice(100, 0, target=Target(odd, control_dir=Path("/run/cm"))).how == "agent"


def test_rsync_rides_the_master_and_its_argv_holds_no_name_and_no_delete() -> None:
    names = ["a b/c.txt", "new\nline.ipynb", "it's.py", "token=s3cret.txt"]
    argv = transfer.argv(TARGET, there="/opt/my rsync", source="/src/", dest="ada@aura:/dst/")
    assert argv[:3] == ["rsync", "-e", transfer.rsh(TARGET)]
    assert {"--files-from=-", "--from0", "-s"} <= set(argv)
    assert argv[-3:] == ["--", "/src/", "ada@aura:/dst/"]
    assert not [a for a in argv if "delete" in a or "remove" in a]
    # The names go on stdin only; nothing else of the request is in argv.
    assert not [a for a in argv for n in names if n in a or "s3cret" in a]
    assert "--rsync-path='/opt/my rsync'" in argv  # the remote shell runs it
    # rsync splits -e on spaces and honours quotes: back to tether's own ssh, on its
    # master (ControlPath), never a master itself, never prompting.
    rsh = shlex.split(transfer.rsh(TARGET))
    assert rsh[: len(TARGET.base_argv())] == TARGET.base_argv()
    assert "ControlPath=/run/cm/%C" in rsh and "/cfg dir/ssh config" in rsh
    assert rsh[-5:] == ["-o", "ControlMaster=no", "-o", "BatchMode=yes", "-T"]


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_only_the_named_files_are_copied_and_nothing_is_deleted(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    names = ["a b/c d.txt", "new\nline.ipynb", "it's.py", "-not-an-option.txt"]
    for rel in [*names, "not chosen.txt"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(f"content of {rel}")
    dst.mkdir()
    (dst / "already there.txt").write_text("kept")
    failed = transfer.copy(TARGET, there=RSYNC, source=f"{src}/", dest=f"{dst}/", names=names)
    assert failed == ""
    got = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert got == sorted([*names, "already there.txt"])
    assert all((dst / rel).read_text() == f"content of {rel}" for rel in names)
    assert all((dst / rel).stat().st_mode & 0o777 == 0o600 for rel in names)  # staged: private


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_a_failed_rsync_says_why(tmp_path: Path) -> None:
    failed = transfer.copy(
        TARGET, there=RSYNC, source=f"{tmp_path}/none/", dest=f"{tmp_path}/d/", names=["x"]
    )
    assert failed.startswith("rsync failed (exit ") and "none" in failed


def test_the_probe_reports_the_servers_rsync() -> None:
    lines = "@@T tool_rsync={}\n@@T done=1\n"
    assert probe.parse(lines.format("/usr/bin/rsync")).has("rsync")
    assert not probe.parse(lines.format("")).has("rsync")


# --- the server's side of a staged push ------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    (tmp_path / "proj").mkdir()
    return tmp_path


def test_the_listing_names_rsync_and_a_private_staging_root(home: Path) -> None:
    got = syncing.op_sync_list({"remote": "proj", "root_dir": str(home), "max_size": 0})
    if shutil.which("rsync") is None:
        assert got["rsync"] is None and got["staging"] is None
        return
    assert got["rsync"] == shutil.which("rsync") and got["staging"] == syncing.staging_root()
    assert Path(syncing.staging_root()).stat().st_mode & 0o777 == 0o700


def test_a_staged_push_lands_like_a_sent_one_and_the_staging_goes(home: Path) -> None:
    proj = home / "proj"
    (proj / "a.txt").write_text("server")
    staging = Path(syncing.staging_root()) / "aura-1"
    (staging / "sub").mkdir(parents=True)
    (staging / "a.txt").write_text("laptop")
    (staging / "sub" / "b.txt").write_text("torn")  # not what the workstation read
    files = {
        "a.txt": {"staged": True, "sha256": syncing.digest(b"laptop")},
        "sub/b.txt": {"staged": True, "sha256": syncing.digest(b"whole"), "expect": None},
        "c.txt": {"staged": True, "sha256": syncing.digest(b"never staged"), "expect": None},
    }
    files["a.txt"]["expect"] = syncing.digest(b"server")
    req = {"name": "aura", "remote": "proj", "root_dir": str(home), "files": files}
    done = syncing.op_sync_write(dict(req, staging="aura-1"))
    assert done["written"] == ["a.txt"] and (proj / "a.txt").read_text() == "laptop"
    (saved,) = done["backups"]
    assert Path(saved).read_text() == "server"  # backed up as a sent push's would be
    assert sorted(done["unstaged"]) == ["c.txt", "sub/b.txt"]
    assert not (proj / "sub" / "b.txt").exists() and not (proj / "c.txt").exists()
    assert not staging.exists()


@pytest.mark.parametrize("name", ["../x", "a/b", ".", ""])
def test_a_staging_directory_is_only_one_under_the_staging_root(home: Path, name: str) -> None:
    req = {"name": "aura", "remote": "proj", "root_dir": str(home), "files": {}}
    if not name:
        assert syncing.op_sync_write(dict(req, staging=name))["written"] == []
        return
    with pytest.raises(RemoteError):
        syncing.op_sync_write(dict(req, staging=name))
