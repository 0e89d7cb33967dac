"""`develop` and `autoreload` pieces that need no server: the env's kernel config file
(remote/envs.py) and what an offline server needs for an editable install."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_tether import develop
from jupyter_tether.errors import TetherError
from jupyter_tether.remote import envs


def test_autoreload_file_is_written_removed_and_a_foreign_one_kept(tmp_path: Path) -> None:
    conf = tmp_path / envs.AUTORELOAD_FILE
    assert envs.set_autoreload(str(tmp_path), True) is True
    assert conf.read_text() == envs.AUTORELOAD_CONFIG
    assert "%autoreload 2" in conf.read_text() and '"autoreload"' in conf.read_text()
    assert envs.set_autoreload(str(tmp_path), True) is True  # again: unchanged
    assert envs.set_autoreload(str(tmp_path), False) is False
    assert not conf.exists()
    assert envs.set_autoreload(str(tmp_path), False) is False  # nothing to remove
    conf.write_text("c.InteractiveShellApp.exec_lines = ['import os']\n")
    assert envs.set_autoreload(str(tmp_path), True) is False  # the user's own file wins
    assert conf.read_text() == "c.InteractiveShellApp.exec_lines = ['import os']\n"


def test_offline_needs_the_build_backend_and_the_dependencies(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling>=1.20"]\nbuild-backend = "hatchling.build"\n'
        '[project]\nname = "mypkg"\nversion = "0.1"\ndependencies = ["toolz"]\n'
    )
    assert develop.offline_requirements(tmp_path) == ["hatchling>=1.20", "toolz"]
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "mypkg"\nversion = "0.1"\n')
    assert develop.offline_requirements(tmp_path) == list(develop.DEFAULT_BUILD_REQUIRES)
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "mypkg"\ndynamic = ["version", "dependencies"]\n'
    )
    with pytest.raises(TetherError, match="dynamic"):
        develop.offline_requirements(tmp_path)
    (tmp_path / "pyproject.toml").unlink()
    with pytest.raises(TetherError, match=r"pyproject\.toml"):
        develop.offline_requirements(tmp_path)
