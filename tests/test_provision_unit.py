"""Provisioning's pure logic: spec hashing, uv wheel choice, platform tags, profile keys,
and the one bad-input case that cannot be produced here (a server of another architecture)."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from jupyter_tether import config, output, probe, provision, ssh
from jupyter_tether.errors import ExitCode, TetherError
from jupyter_tether.provision import builder_calls, copy, index
from testing.helpers.cli import toml_value

UV_FILES = [
    "uv-0.13.9-py3-none-linux_armv6l.whl",
    "uv-0.13.9-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64.whl",
    "uv-0.13.9-py3-none-manylinux_2_17_ppc64le.manylinux2014_ppc64le.whl",
    "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "uv-0.13.9-py3-none-manylinux_2_28_aarch64.whl",
    "uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl",
    "uv-0.13.9-py3-none-musllinux_1_1_i686.whl",
    "uv-0.13.9-py3-none-manylinux_2_17_i686.manylinux2014_i686.whl",
    "uv-0.13.9.tar.gz",
]


@pytest.mark.parametrize(
    ("machine", "glibc", "expected"),
    [
        # the static musl build wins wherever it exists, whatever the glibc
        ("x86_64", "2.36", "uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl"),
        ("x86_64", "2.5", "uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl"),
        ("x86_64", None, "uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl"),
        ("i386", "2.17", "uv-0.13.9-py3-none-musllinux_1_1_i686.whl"),
        (
            "aarch64",
            "2.31",
            "uv-0.13.9-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64"
            ".musllinux_1_1_aarch64.whl",
        ),
        # ppc64le only has a manylinux build: it needs glibc >= 2.17
        ("ppc64le", "2.28", "uv-0.13.9-py3-none-manylinux_2_17_ppc64le.manylinux2014_ppc64le.whl"),
        ("ppc64le", "2.12", None),
        ("ppc64le", None, None),
        ("s390x", "2.36", None),
    ],
)
def test_choose_uv_wheel(machine: str, glibc: str | None, expected: str | None) -> None:
    assert provision.choose_uv_wheel(UV_FILES, machine, glibc) == expected


def test_manylinux_chooses_the_newest_glibc_the_server_has() -> None:
    files = [
        "x-1-py3-none-manylinux_2_17_ppc64le.whl",
        "x-1-py3-none-manylinux_2_28_ppc64le.whl",
        "x-1-py3-none-manylinux_2_39_ppc64le.whl",
    ]
    assert provision.choose_uv_wheel(files, "ppc64le", "2.34") == files[1]


def test_manylinux_platforms_cover_every_glibc_down_to_manylinux1() -> None:
    tags = provision.manylinux_platforms("x86_64", "2.28")
    assert tags[0] == "manylinux_2_28_x86_64"
    assert "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert "manylinux2010_x86_64" in tags and "manylinux1_x86_64" in tags
    assert "manylinux_2_29_x86_64" not in tags
    assert provision.manylinux_platforms("aarch64", None)[0].startswith("musllinux_")


@pytest.mark.parametrize(
    ("req", "name"),
    [
        ("pandas>=2", "pandas"),
        ("scikit-learn[all] ; python_version>'3.8'", "scikit-learn"),
        ("jupyter_server>=2.21", "jupyter_server"),
        ("--index-url https://x", None),
        ("./local/pkg", None),
        ("https://example.org/x.whl", None),
        ("", None),
    ],
)
def test_requirement_name(req: str, name: str | None) -> None:
    assert provision.requirement_name(req) == name


def _probe(*pythons: tuple[str, tuple[int, ...]]) -> probe.Probe:
    return probe.Probe(
        hostname="h",
        os="Linux",
        arch="x86_64",
        uid=1000,
        user="u",
        home="/home/u",
        glibc="2.36",
        home_free_kb=None,
        xdg_runtime_dir=None,
        linger=False,
        login_path="/usr/bin",
        module_init=None,
        lmod=False,
        pythons=tuple(probe.Python(p, v) for p, v in pythons),
    )


def _profile(tmp_path: Path, body: str) -> config.Profile:
    path = tmp_path / "c.toml"
    path.write_text("[hosts.aura]\n" + body)
    return config.resolve("aura", config_path=path)


def test_spec_hash_is_stable_and_sensitive(tmp_path: Path) -> None:
    found = _probe(("/usr/bin/python3", (3, 11, 2)), ("/usr/bin/python3.9", (3, 9, 18)))
    base = provision.spec_for(_profile(tmp_path, 'packages = ["numpy", "pandas"]\n'), found)
    same = provision.spec_for(_profile(tmp_path, 'packages = ["pandas", "numpy"]\n'), found)
    assert base.digest() == same.digest()  # order does not change what gets installed
    assert len(base.digest()) == 12
    changed = [
        'packages = ["numpy"]\n',
        'packages = ["numpy", "pandas"]\npython = "3.9"\n',
        'packages = ["numpy", "pandas"]\nindex_url = "https://mirror.example/simple"\n',
        'packages = ["numpy", "pandas"]\njupyter = "notebook>=7"\n',
        'packages = ["numpy", "pandas"]\nmodules = ["gcc"]\n',
        'packages = ["numpy", "pandas"]\nkernels = ["~/other"]\n',
    ]
    digests = {provision.spec_for(_profile(tmp_path, b), found).digest() for b in changed}
    assert base.digest() not in digests and len(digests) == len(changed)
    # ...and so does the interpreter the server has
    newer = _probe(("/usr/bin/python3", (3, 11, 9)))
    again = provision.spec_for(_profile(tmp_path, 'packages = ["numpy", "pandas"]\n'), newer)
    assert again.digest() != base.digest()


def test_slow_rfc3987_syntax_is_left_out_unless_named(tmp_path: Path) -> None:
    found = _probe(("/usr/bin/python3", (3, 11, 2)))
    plain = provision.spec_for(_profile(tmp_path, 'packages = ["numpy"]\n'), found)
    assert plain.left_out == ("rfc3987-syntax",)
    for named in ("rfc3987-syntax", "RFC3987_Syntax>=1.1", "rfc3987.syntax ; python_version>'3'"):
        body = f"packages = [{toml_value(named)}]\n"
        spec = provision.spec_for(_profile(tmp_path, body), found)
        assert spec.left_out == (), named
        assert spec.digest() != plain.digest()
    assert provision.left_out(["-r other.txt", "./local", "jsonschema[format-nongpl]"]) == (
        "rfc3987-syntax",
    )


def test_default_jupyter_pins_a_safe_jupyter_server(tmp_path: Path) -> None:
    found = _probe(("/usr/bin/python3", (3, 11, 2)))
    spec = provision.spec_for(_profile(tmp_path, "packages = []\n"), found)
    assert "jupyter_server>=2.21" in spec.requirements
    assert {"jupyterlab", "ipykernel", "jupyter_server"} <= set(spec.import_names)


def test_requirements_file_is_part_of_the_spec(tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# comment\nrequests==2.32.3  # pinned\n\nsix\n")
    found = _probe(("/usr/bin/python3", (3, 11, 2)))
    spec = provision.spec_for(_profile(tmp_path, f'requirements = "{reqs}"\n'), found)
    assert "requests==2.32.3" in spec.requirements and "six" in spec.requirements
    reqs.write_text("requests==2.32.4\n")
    again = provision.spec_for(_profile(tmp_path, f'requirements = "{reqs}"\n'), found)
    assert again.digest() != spec.digest()


def test_missing_requirements_file_is_a_config_error(tmp_path: Path) -> None:
    found = _probe(("/usr/bin/python3", (3, 11, 2)))
    with pytest.raises(TetherError) as info:
        provision.spec_for(_profile(tmp_path, 'requirements = "/no/such/file"\n'), found)
    assert info.value.code == ExitCode.CONFIG


@pytest.mark.parametrize(
    ("body", "identity", "told"),
    [
        ("", "/usr/bin/python3.12 3.12.1", "/usr/bin/python3.12"),
        ('python = "3.11"\n', "/usr/bin/python3 3.11.2", "/usr/bin/python3"),
        ('python = "3.13"\n', "uv:3.13", "3.13"),
        ('python = "~/py/bin/python3"\n', "path:~/py/bin/python3", "~/py/bin/python3"),
        ('python = "module:python/3.11"\n', "module:python/3.11|modules:", "module:python/3.11"),
    ],
)
def test_interpreter_chain_from_the_probe(
    tmp_path: Path, body: str, identity: str, told: str
) -> None:
    found = _probe(
        ("/usr/bin/python3", (3, 11, 2)),
        ("/usr/bin/python3.12", (3, 12, 1)),
        ("/usr/bin/python3.8", (3, 8, 10)),  # too old to be chosen
    )
    profile = _profile(tmp_path, body + "packages = []\n")
    assert provision.choose_interpreter(profile, found) == (identity, told)


def test_no_python_at_all_falls_to_uv(tmp_path: Path) -> None:
    found = _probe(("/usr/bin/python3", (3, 8, 10)))
    profile = _profile(tmp_path, "packages = []\n")
    assert provision.choose_interpreter(profile, found) == ("uv:3.12", None)


# --------------------------------------------------------------------------- config


def test_provisioning_keys_parse(tmp_path: Path) -> None:
    prof = _profile(
        tmp_path,
        'python = "3.12"\npackages = ["numpy"]\njupyter = "jupyterlab>=4.2"\n'
        'index_url = "https://m/simple"\nextra_index_urls = ["https://n/simple"]\n'
        'offline = true\nkernels = ["~/e"]\nbuild_from_source = true\n',
    )
    assert prof.provision
    assert prof.python == "3.12"
    assert prof.packages == ("numpy",)
    assert prof.jupyter == ("jupyterlab>=4.2",)
    assert prof.extra_index_urls == ("https://n/simple",)
    assert prof.offline is True
    assert prof.kernels == ("~/e",)
    assert prof.build_from_source is True
    d = prof.as_dict()
    assert d["packages"] == ["numpy"] and d["jupyter"] == ["jupyterlab>=4.2"]


def test_no_provisioning_keys_means_no_managed_env(tmp_path: Path) -> None:
    prof = _profile(tmp_path, 'env = "~/venv"\n')
    assert not prof.provision
    assert prof.jupyter == config.DEFAULT_JUPYTER
    assert prof.offline == "auto"


@pytest.mark.parametrize(
    "body",
    [
        "packages = 'numpy'",
        "packages = [1]",
        "offline = 'sometimes'",
        "offline = 1",
        "build_from_source = 'yes'",
        "jupyter = []",
        "jupyter = [3]",
        "python = ''",
        "kernels = 'x'",
        "extra_index_urls = 'https://x'",
    ],
)
def test_provisioning_value_checks(tmp_path: Path, body: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[hosts.aura]\n{body}\n")
    with pytest.raises(TetherError) as info:
        config.resolve("aura", config_path=path)
    assert info.value.code == ExitCode.CONFIG
    assert f"{path}:2:" in info.value.message
    assert body.split("=", maxsplit=1)[0].strip() in info.value.message


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("machine", "glibc"), [("sparc64", "2.36"), ("mips64", "2.31")])
def test_unsupported_architecture_is_a_clear_error(
    machine: str, glibc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bad-input table's "unsupported arch" row. A server of another architecture cannot be
    produced here, so the provisioning code gets its probe: the server answers the
    builder's `prepare` (no uv yet), the index lists uv's real build matrix, which has
    no build for that machine. The error names the platform, and nothing is copied."""
    monkeypatch.setenv("JUPYTER_TETHER_CACHE_DIR", str(tmp_path / "cache"))
    found = dataclasses.replace(_probe(("/usr/bin/python3", (3, 11, 2))), arch=machine, glibc=glibc)
    asked: list[str] = []

    def builder(target: object, found: object, request: dict[str, Any], **_: object) -> Any:
        asked.append(request["op"])
        assert request["op"] == "prepare", request["op"]
        python = {"path": "/usr/bin/python3", "version": [3, 11, 2], "how": "python3"}
        index = {"reachable": True, "detail": "reached"}
        return {"exists": False, "uv": False, "python": python, "python_facts": {}, "index": index}

    def no_copy(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be copied to a server tether cannot serve")

    monkeypatch.setattr(builder_calls, "call", builder)
    monkeypatch.setattr(copy, "push", no_copy)
    monkeypatch.setattr(
        index, "index_files", lambda url, project: {f: (f"{url}/{f}", None) for f in UV_FILES}
    )
    profile = _profile(tmp_path, 'packages = ["numpy"]\n')
    with pytest.raises(TetherError) as info:
        provision.ensure(ssh.Target("aura"), profile, found, progress=output.Progress(quiet=True))
    assert info.value.code == ExitCode.PROVISION
    assert machine in info.value.message and f"glibc {glibc}" in info.value.message
    assert info.value.hint and "env" in info.value.hint
    assert asked == ["prepare"]
    assert not list((tmp_path / "cache").rglob("*.whl"))


# --------------------------------------------------------------------------- overlap


def test_alongside_runs_the_step_while_the_body_runs() -> None:
    """The body waits for the step to have started: run one after the other, it would
    time out instead."""
    started, body_done = threading.Event(), threading.Event()
    seen: list[str] = []

    def step() -> None:
        started.set()
        assert body_done.wait(10)
        seen.append("step")

    with provision._alongside(step):
        assert started.wait(10), "the step did not start alongside the body"
        seen.append("body")
        body_done.set()
    assert seen == ["body", "step"]  # and it was over when the block ended


def test_alongside_raises_the_steps_error_after_the_body() -> None:
    def step() -> None:
        raise TetherError("copying uv failed", code=ExitCode.PROVISION)

    body: list[str] = []
    with pytest.raises(TetherError, match="copying uv failed"), provision._alongside(step):
        body.append("ran")
    assert body == ["ran"]


def test_alongside_waits_for_the_step_when_the_body_fails() -> None:
    """A failed download must not leave the uv copy running behind the error."""
    finished = threading.Event()

    def step() -> None:
        time.sleep(0.2)
        finished.set()

    with pytest.raises(TetherError, match="no wheel"), provision._alongside(step):
        raise TetherError("no wheel of x", code=ExitCode.PROVISION)
    assert finished.is_set()


def test_offline_build_copies_uv_while_the_wheels_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, with a python on the server and no uv: the uv copy starts before the
    wheel download ends, and both are done before the build is asked for."""
    found = _probe(("/usr/bin/python3", (3, 11, 2)))
    events: list[str] = []
    uv_started = threading.Event()

    def builder(target: object, found: object, request: dict[str, Any], **_: object) -> Any:
        events.append(request["op"])
        if request["op"] == "prepare":
            python = {"path": "/usr/bin/python3", "version": [3, 11, 2], "how": "python3"}
            return {
                "exists": False,
                "uv": False,
                "python": python,
                "python_facts": {},
                "index": {"reachable": False, "detail": "no route"},
                "wheels": [],
            }
        return {"env": "~/envs/x", "timings": {}}

    def install_uv(*args: object) -> None:
        uv_started.set()
        time.sleep(0.1)
        events.append("uv")

    def download(*args: object) -> Path:
        assert uv_started.wait(10), "uv was not copied alongside the download"
        events.append("wheels")
        return tmp_path

    monkeypatch.setattr(builder_calls, "call", builder)
    monkeypatch.setattr(provision, "install_uv", install_uv)
    monkeypatch.setattr(provision, "download_wheels", download)
    monkeypatch.setattr(provision, "push_wheels", lambda *a: events.append("copy"))
    profile = _profile(tmp_path, 'packages = ["numpy"]\noffline = true\n')
    progress = output.Progress(quiet=True)
    provision.ensure(ssh.Target("aura"), profile, found, progress=progress)
    assert events[0] == "prepare" and events[-1] == "build"
    assert sorted(events[1:-1]) == ["copy", "uv", "wheels"]
    assert {"uv", "wheels", "copy", "build"} <= set(progress.timings)
