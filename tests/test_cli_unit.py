"""The command line in-process: --json errors, the version, completion scripts."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from jupyter_tether import __version__, cli, completion
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


SUBCOMMANDS = next(
    list(a.choices)
    for a in cli.build_parser()._actions
    if isinstance(a, argparse._SubParsersAction)
)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_list_every_subcommand(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["completion", shell]) == 0
    text = capsys.readouterr().out
    assert len(SUBCOMMANDS) >= 12
    entry = {"bash": "        {}) flags=", "zsh": "        '{}:", "fish": " -a {} -d "}[shell]
    for name in SUBCOMMANDS:
        assert entry.format(name) in text, (shell, name)
    assert "no-browser" in text and "autostart" in text


def _bash_complete(tmp_path: Path, words: list[str], config: Path) -> list[str]:
    """Candidates from the real bash completion function, with `tether` on PATH."""
    script = tmp_path / "tether.bash"
    script.write_text(completion.script("bash", cli.build_parser()))
    line = " ".join(shlex.quote(w) for w in words)
    probe = (
        f"source {shlex.quote(str(script))}; COMP_WORDS=({line}); "
        f"COMP_CWORD={len(words) - 1}; _tether; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "JUPYTER_TETHER_CONFIG": str(config),
    }
    res = subprocess.run(
        ["bash", "--norc", "-c", probe], capture_output=True, text=True, env=env, timeout=30
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_bash_completes_commands_flags_and_profiles(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[hosts.aura]\nssh = "aura"\n[hosts.aisa]\nssh = "aisa"\n')
    assert _bash_complete(tmp_path, ["tether", "do"], config) == ["down", "doctor"]
    assert _bash_complete(tmp_path, ["tether", "up", "--no-"], config) == [
        "--no-browser",
        "--no-keep-outputs",
    ]
    assert sorted(_bash_complete(tmp_path, ["tether", "up", "a"], config)) == ["aisa", "aura"]
    assert _bash_complete(tmp_path, ["tether", "demo", "a"], config) == []


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_loads(tmp_path: Path) -> None:
    script = tmp_path / "_tether"
    script.write_text(completion.script("zsh", cli.build_parser()))
    res = subprocess.run(
        ["zsh", "-f", "-c", f"autoload -U compinit && compinit -u && source {script}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""


def test_profiles_are_listed_for_the_scripts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[hosts.aura]\nssh = "aura"\n')
    monkeypatch.setenv("JUPYTER_TETHER_CONFIG", str(config))
    assert cli.main(["completion", "--profiles"]) == 0
    assert capsys.readouterr().out.split() == ["aura"]
