"""Profiles: parsing, validation with file:line messages, merging with flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_tether import config
from jupyter_tether.errors import ExitCode, TetherError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    prof = config.resolve("aura", config_path=tmp_path / "nope.toml")
    assert prof.ssh == "aura"
    assert prof.app == "lab"
    assert prof.nice == 10
    assert prof.root_dir == "~"
    assert prof.source == "defaults"


def test_profile_merges_defaults_then_host_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[defaults]
nice = 5
app = "notebook"

[hosts.aura]
ssh = "me@aura.example.edu"
env = "~/venvs/lab"
modules = ["python/3.11", "cuda"]
env_vars = { OMP_NUM_THREADS = "4" }
port = 18888
""",
    )
    prof = config.resolve("aura", config_path=path, overrides={"app": "lab", "nice": None})
    assert prof.ssh == "me@aura.example.edu"
    assert prof.app == "lab"  # flag beats file
    assert prof.nice == 5  # [defaults], flag not given
    assert prof.env == "~/venvs/lab"
    assert prof.modules == ("python/3.11", "cuda")
    assert dict(prof.env_vars) == {"OMP_NUM_THREADS": "4"}
    assert prof.port == 18888
    assert "[hosts.aura]" in prof.source


def test_unknown_name_is_an_ssh_destination(tmp_path: Path) -> None:
    path = write(tmp_path, '[hosts.aura]\nssh = "x"\n')
    prof = config.resolve("user@other.example.org", config_path=path)
    assert prof.ssh == "user@other.example.org"


def error_of(tmp_path: Path, text: str) -> TetherError:
    path = write(tmp_path, text)
    with pytest.raises(TetherError) as info:
        config.resolve("aura", config_path=path)
    assert info.value.code == ExitCode.CONFIG
    assert str(path) in info.value.message
    assert info.value.hint
    return info.value


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    err = error_of(tmp_path, "[hosts.aura]\nssh = aura\n")
    assert "line 2" in err.message


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    err = error_of(tmp_path, '[hosts.aura]\nssh = "a"\n\nnicee = 3\n')
    assert ":4:" in err.message
    assert "nicee" in err.message
    assert err.hint is not None and "nice" in err.hint


def test_wrong_type_names_key_and_line(tmp_path: Path) -> None:
    err = error_of(tmp_path, '[hosts.aura]\nnice = "high"\n')
    assert ":2:" in err.message
    assert "nice" in err.message


@pytest.mark.parametrize(
    "body",
    [
        "app = 'jupyterlab'",
        "nice = 40",
        "nice = true",
        "port = 80",
        "modules = 'python'",
        "modules = [1, 2]",
        "env_vars = { A = 1 }",
        "transport = 'udp'",
        "startup_timeout = -1",
    ],
)
def test_value_checks(tmp_path: Path, body: str) -> None:
    key = body.split("=", maxsplit=1)[0].strip()
    err = error_of(tmp_path, f"[hosts.aura]\n{body}\n")
    assert key in err.message
    assert ":2:" in err.message


def test_unknown_top_level_table(tmp_path: Path) -> None:
    err = error_of(tmp_path, '[host.aura]\nssh = "a"\n')
    assert "host" in err.message
    assert ":1:" in err.message


@pytest.mark.parametrize("name", ["a b", "a;b", "$(touch x)", "a'b", '"q"', "-oProxyCommand=x", ""])
def test_unusable_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(TetherError) as info:
        config.resolve(name, config_path=tmp_path / "none.toml")
    assert info.value.code == ExitCode.CONFIG


def test_as_dict_is_plain(tmp_path: Path) -> None:
    path = write(tmp_path, '[hosts.aura]\nmodules = ["m"]\nenv_vars = { K = "v" }\n')
    d = config.resolve("aura", config_path=path).as_dict()
    assert d["modules"] == ["m"]
    assert d["env_vars"] == {"K": "v"}


# --------------------------------------------------------------------------- develop


@pytest.mark.parametrize(
    "body",
    [
        "develop = '~/work/mypkg'",  # a list, not a string
        "develop = [1]",
        "develop = ['']",
        "develop = ['~']",  # no name of its own on the server
        "develop = ['~/a/mypkg', '~/b/mypkg/']",  # both would be .tether-develop/mypkg
        "autoreload = 'yes'",
        "autoreload = 1",
    ],
)
def test_develop_and_autoreload_checks(tmp_path: Path, body: str) -> None:
    key = body.split("=", maxsplit=1)[0].strip()
    err = error_of(tmp_path, f'[hosts.aura]\nssh = "a"\n{body}\n')
    assert err.code == ExitCode.CONFIG
    assert f"{key} = " in err.message and ":3:" in err.message


def test_develop_folders_become_sync_pairs_and_ask_for_a_managed_env(tmp_path: Path) -> None:
    path = write(tmp_path, '[hosts.aura]\ndevelop = ["~/work/mypkg/", "/src/other"]\n')
    profile = config.resolve("aura", config_path=path)
    assert profile.develop == ("~/work/mypkg/", "/src/other")
    assert profile.provision and profile.autoreload is None
    pairs = config.develop_pairs(profile)
    assert [(p.local, p.remote) for p in pairs] == [
        ("~/work/mypkg/", ".tether-develop/mypkg"),
        ("/src/other", ".tether-develop/other"),
    ]
    assert all("*.egg-info/" in p.exclude for p in pairs)
    assert config.resolve("aura", config_path=path).as_dict()["develop"] == list(profile.develop)


def test_autoreload_is_said_or_not(tmp_path: Path) -> None:
    on = write(tmp_path, "[hosts.aura]\nautoreload = true\n")
    profile = config.resolve("aura", config_path=on)
    assert profile.autoreload is True and profile.provision
    off = write(tmp_path, "[hosts.aura]\nautoreload = false\n")
    profile = config.resolve("aura", config_path=off)
    # false is said (the env's autoreload file goes), but asks for no managed env
    assert profile.autoreload is False and not profile.provision
    assert config.resolve("aura", config_path=write(tmp_path, "")).autoreload is None
