"""The wheel ships the product: the demo's sshd and the remote scripts, and none of the
test machinery (accounts, network namespaces, Jupyter environment builds)."""

from __future__ import annotations

import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.accounts import find_uv

ROOT = Path(__file__).resolve().parent.parent
# What only the tests and the benchmarks do: create accounts, build namespaces, build
# Jupyter environments from PyPI.
TEST_ONLY = ("useradd", "ip netns", "netns", "make_jupyter_env")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run(
        [find_uv(), "build", "--wheel", "--quiet", "-o", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    [path] = out.glob("*.whl")
    with zipfile.ZipFile(path) as whl:
        yield whl


def test_wheel_has_no_test_machinery_modules(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert names
    assert not [n for n in names if n.split("/")[0] in ("testing", "tests", "benchmarks")]
    assert not [n for n in names if Path(n).stem == "sandbox"]


def test_no_file_in_the_wheel_does_what_only_tests_do(wheel: zipfile.ZipFile) -> None:
    offenders = [
        (name, word)
        for name in wheel.namelist()
        for word in TEST_ONLY
        if word in wheel.read(name).decode("utf-8", errors="replace")
    ]
    assert offenders == []


def test_wheel_has_the_demo_sshd_and_the_remote_scripts(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "jupyter_tether/demo_sshd.py" in names
    scripts = sorted(p.name for p in (ROOT / "src" / "jupyter_tether" / "remote").glob("*.sh"))
    assert scripts  # probe.sh and run.sh at least
    missing = [s for s in scripts if f"jupyter_tether/remote/{s}" not in names]
    assert missing == []
