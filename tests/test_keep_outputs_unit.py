"""keep_outputs: the profile key and flag, what it adds to a managed environment's spec
(and so to its hash), and the check of an environment the profile brings itself."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from jupyter_tether import cli, config, output, provision, ssh
from jupyter_tether.commands import install
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.provision import keep_outputs
from jupyter_tether.provision.spec import KEEP_OUTPUTS
from tests.test_provision_unit import _probe, _profile

FOUND = _probe(("/usr/bin/python3", (3, 11, 2)))


def _pairs(*extra: tuple[str, str]) -> list[tuple[str, str]]:
    """(name, version) of the whole tested set, as `tether env` lists them, plus extra."""
    return [(r.partition("==")[0], r.partition("==")[2]) for r in KEEP_OUTPUTS] + list(extra)


# --------------------------------------------------------------------------- config


def test_off_by_default_and_no_managed_env_for_it(tmp_path: Path) -> None:
    prof = _profile(tmp_path, 'env = "~/venv"\n')
    assert prof.keep_outputs is False
    assert config.resolve("aura", config_path=tmp_path / "none.toml").keep_outputs is False
    off = _profile(tmp_path, "keep_outputs = false\n")
    assert not off.provision  # turning it off asks for nothing


def test_on_asks_for_a_managed_env(tmp_path: Path) -> None:
    prof = _profile(tmp_path, "keep_outputs = true\n")
    assert prof.keep_outputs is True
    assert prof.provision  # even where Jupyter is on the login PATH: it needs its packages
    assert prof.as_dict()["keep_outputs"] is True


@pytest.mark.parametrize("body", ["keep_outputs = 'yes'", "keep_outputs = 1"])
def test_wrong_type_names_file_line_and_key(tmp_path: Path, body: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[hosts.aura]\nssh = 'x'\n{body}\n")
    with pytest.raises(TetherError) as info:
        config.resolve("aura", config_path=path)
    assert info.value.code == ExitCode.CONFIG
    assert f"{path}:3:" in info.value.message and "keep_outputs" in info.value.message


@pytest.mark.parametrize(
    ("argv", "body", "expected"),
    [
        (["--keep-outputs"], "", True),
        (["--no-keep-outputs"], "keep_outputs = true\n", False),
        ([], "keep_outputs = true\n", True),
        ([], "", False),
    ],
)
def test_flag_overrides_the_profile(
    tmp_path: Path, argv: list[str], body: str, expected: bool
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[hosts.aura]\n" + body)
    args = cli.build_parser().parse_args(["up", "aura", *argv])
    prof = config.resolve("aura", config_path=path, overrides=cli._overrides(args))
    assert prof.keep_outputs is expected


# --------------------------------------------------------------------------- spec


def test_the_tested_set_replaces_the_default_jupyter(tmp_path: Path) -> None:
    plain = provision.spec_for(_profile(tmp_path, "packages = ['numpy']\n"), FOUND)
    kept = provision.spec_for(
        _profile(tmp_path, "packages = ['numpy']\nkeep_outputs = true\n"), FOUND
    )
    assert set(KEEP_OUTPUTS) <= set(kept.requirements)
    assert not set(KEEP_OUTPUTS) & set(plain.requirements)
    assert "jupyter_server>=2.21" not in kept.requirements  # the set pins a newer one
    assert {"numpy", "ipykernel"} <= set(kept.requirements)
    assert "jupyter_server_documents" in {n.replace("-", "_") for n in kept.import_names}
    # A changed keep_outputs is a changed spec: another environment, as with packages.
    assert kept.digest() != plain.digest()
    off = provision.spec_for(
        _profile(tmp_path, "packages = ['numpy']\nkeep_outputs = false\n"), FOUND
    )
    assert off.digest() == plain.digest()


def test_a_profile_jupyter_is_kept_beside_the_set(tmp_path: Path) -> None:
    body = "jupyter = 'jupyterlab>=4.6'\nkeep_outputs = true\n"
    spec = provision.spec_for(_profile(tmp_path, body), FOUND)
    assert spec.requirements[0] == "jupyterlab>=4.6"
    assert set(KEEP_OUTPUTS) <= set(spec.requirements)


@pytest.mark.parametrize(
    "other", ["jupyter-server-nbmodel[lab]", "jupyter_collaboration>=4", "Jupyter.Server.Ydoc"]
)
def test_another_executor_in_the_profile_is_refused(tmp_path: Path, other: str) -> None:
    body = f"packages = ['numpy', '{other}']\nkeep_outputs = true\n"
    with pytest.raises(TetherError) as info:
        provision.spec_for(_profile(tmp_path, body), FOUND)
    assert info.value.code == ExitCode.CONFIG
    assert other.split("[", maxsplit=1)[0].split(">", maxsplit=1)[0] in info.value.message
    # without keep_outputs it is just a package
    assert provision.spec_for(_profile(tmp_path, f"packages = ['{other}']\n"), FOUND)


def test_another_executor_in_the_requirements_file_is_refused(tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pandas\njupyter-server-nbmodel==0.2.9\n")
    body = f"requirements = '{reqs}'\nkeep_outputs = true\n"
    with pytest.raises(TetherError, match="jupyter-server-nbmodel"):
        provision.spec_for(_profile(tmp_path, body), FOUND)


def test_install_refuses_another_executor_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[hosts.aura]\nssh = 'nowhere.invalid'\nkeep_outputs = true\n")
    monkeypatch.setenv("JUPYTER_TETHER_CONFIG", str(path))
    with pytest.raises(TetherError) as info:
        install.install("aura", ["numpy", "jupyter-server-nbmodel"])
    assert info.value.code == ExitCode.USAGE
    assert "jupyter-server-nbmodel" in info.value.message and "numpy" not in info.value.message


# --------------------------------------------------------------------------- own env


def test_an_env_with_the_set_is_tested() -> None:
    got = keep_outputs.check(_pairs(("numpy", "2.3.0")))
    assert got.works and got.tested
    assert got.missing == () and got.conflicts == ()


def test_an_env_without_it_gets_the_pip_line() -> None:
    got = keep_outputs.check([("jupyterlab", "4.6.6"), ("jupyter_server", "2.21.1")])
    assert not got.works
    assert "jupyter-server-documents==0.3.3" in got.missing
    text = keep_outputs.advice("~/venvs/lab", got)
    assert "outputs made with no browser open are lost" in text
    assert "~/venvs/lab/bin/python -m pip install jupyterlab==4.6.6 " in text
    assert all(r in text for r in KEEP_OUTPUTS)


def test_other_versions_work_but_are_untested() -> None:
    pairs = [p if p[0] != "jupyterlab" else ("JupyterLab", "4.6.2") for p in _pairs()]
    got = keep_outputs.check(pairs)
    assert got.works and not got.tested
    assert got.other_versions == ("jupyterlab 4.6.2 (tested: 4.6.6)",)
    assert "untested" in keep_outputs.advice("/e", got)


def test_a_second_executor_in_the_env_breaks_it() -> None:
    got = keep_outputs.check(_pairs(("jupyter_server_nbmodel", "0.2.9")))
    assert not got.works
    assert got.conflicts == ("jupyter-server-nbmodel",)
    assert "/e/bin/python -m pip uninstall -y jupyter-server-nbmodel" in keep_outputs.advice(
        "/e", got
    )


@pytest.mark.parametrize(("running", "said"), [("aura-OLD", True), (None, False)])
def test_an_unchanged_env_still_tells_of_a_server_on_another(
    tmp_path: Path, running: str | None, said: bool
) -> None:
    """Switching keep_outputs back to a spec built before finds its env ready (no
    build), but the running server was started from the other one: `up` says so."""
    profile = _profile(tmp_path, "keep_outputs = true\n")
    name = provision.env_name(profile, provision.spec_for(profile, FOUND))
    envs = "/home/u/.local/share/jupyter-tether/envs"
    server = {"name": "aura", "jupyter": f"{envs}/{running or name}/bin/jupyter"}
    found = dataclasses.replace(FOUND, tether_envs=(name,), servers=(server,))
    stream = io.StringIO()
    progress = output.Progress(stream=stream)
    env = provision.ensure(ssh.Target("aura"), profile, found, progress=progress)
    assert env == f"{envs}/{name}"
    assert ("keeps its old environment" in stream.getvalue()) is said
