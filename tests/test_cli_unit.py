"""The command line in-process: --json errors, the version, completion scripts."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from jupyter_tether import __version__, cli
from jupyter_tether.errors import ExitCode


@pytest.fixture
def bad_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('[hosts.aura]\nssh = "aura"\nnice = "very"\n')
    monkeypatch.setenv("JUPYTER_TETHER_CONFIG", str(path))
    return path


def test_json_error_is_one_object_on_stdout(
    bad_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(["config", "aura", "--json"])
    out, err = capsys.readouterr()
    assert rc == ExitCode.CONFIG
    answer = json.loads(out)  # exactly one JSON document, nothing else
    assert answer["code"] == int(ExitCode.CONFIG)
    assert str(bad_config) in answer["error"] and "nice" in answer["error"]
    assert "error:" in err  # people still read stderr


def test_without_json_stdout_stays_empty(
    bad_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["config", "aura"]) == ExitCode.CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert "error:" in err


def test_the_version_is_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    assert __version__ == metadata.version("jupyter-tether")
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"jupyter-tether {__version__}"
