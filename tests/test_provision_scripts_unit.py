"""The sh that receives copies on the server (``provision/scripts``), run here for real
the way sshd runs a session's command: ``$SHELL -c COMMAND`` under each login shell
this machine has, with the file on stdin and a temporary home."""

from __future__ import annotations

import ast
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from jupyter_tether.provision import copy

SCRIPTS = ["push.sh", "push_uv.sh", "unzip_uv.py"]
SHELLS = [s for s in ("sh", "dash", "bash", "zsh", "tcsh") if shutil.which(s)]
MEMBER = "uv-0.13.9.data/scripts/uv"


def _run(shell: str, command: str, home: Path, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    return subprocess.run(
        [shell, "-c", command], input=stdin, env=env, capture_output=True, timeout=30
    )


def _tar(files: dict[str, bytes], *, gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _data(home: Path) -> Path:
    return home / ".local" / "share" / "jupyter-tether"


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_travel_as_one_line_any_login_shell_passes(name: str) -> None:
    """tcsh rejects a newline inside quotes and expands "!" even there."""
    text = copy.script(name)
    assert text and "\n" not in text and "'" not in text and "!" not in text


def test_unzip_uv_runs_under_python_38() -> None:
    """The server's python3 may be old (README: any Python >= 3.8)."""
    ast.parse(copy.script("unzip_uv.py"), feature_version=(3, 8))


@pytest.mark.parametrize("name", ["push.sh", "push_uv.sh"])
def test_sh_scripts_parse(name: str) -> None:
    res = subprocess.run(["sh", "-n", "-c", copy.script(name)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("gz", [False, True])
def test_push_unpacks_into_the_data_directory(shell: str, gz: bool, tmp_path: Path) -> None:
    wheels = {"a-1.0-py3-none-any.whl": b"a", "b-2.0-py3-none-any.whl": b"bb"}
    command = copy.remote_command("push.sh", "wheels", "-xzf" if gz else "-xf")
    res = _run(shell, command, tmp_path, _tar(wheels, gz=gz))
    assert res.returncode == 0, res.stderr
    dest = _data(tmp_path) / "wheels"
    assert {f.name: f.read_bytes() for f in dest.iterdir()} == wheels
    # a second push adds to what is there
    res = _run(shell, command, tmp_path, _tar({"c-3.0-py3-none-any.whl": b"c"}, gz=gz))
    assert res.returncode == 0, res.stderr
    assert len(list(dest.iterdir())) == 3


def test_a_failed_push_leaves_nothing_behind(tmp_path: Path) -> None:
    res = _run("sh", copy.remote_command("push.sh", "wheels", "-xf"), tmp_path, b"not a tar")
    assert res.returncode != 0
    assert b"tar" in res.stderr  # how copy._send tells this from ssh's own 255
    assert list((_data(tmp_path) / "wheels").iterdir()) == []


@pytest.mark.parametrize("shell", SHELLS)
def test_push_uv_takes_the_binary_out_of_the_wheel(shell: str, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(MEMBER, b"#!/bin/sh\necho uv\n")
        zf.writestr("uv-0.13.9.dist-info/METADATA", b"Name: uv\n")
    command = copy.remote_command("push_uv.sh", sys.executable, copy.script("unzip_uv.py"), MEMBER)
    res = _run(shell, command, tmp_path, buf.getvalue())
    assert res.returncode == 0, res.stderr
    uv = _data(tmp_path) / "bin" / "uv"
    assert subprocess.run([uv], capture_output=True, text=True).stdout == "uv\n"
    assert uv.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in uv.parent.iterdir()] == ["uv"]


def test_push_uv_fails_on_a_wheel_without_the_binary(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("uv-0.13.9.dist-info/METADATA", b"Name: uv\n")
    command = copy.remote_command("push_uv.sh", sys.executable, copy.script("unzip_uv.py"), MEMBER)
    res = _run("sh", command, tmp_path, buf.getvalue())
    assert res.returncode != 0
    assert list((_data(tmp_path) / "bin").iterdir()) == []
