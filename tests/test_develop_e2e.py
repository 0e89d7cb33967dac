"""`develop` + `autoreload` end to end (issue 14's acceptance): a local package synced to
a fresh account's server, installed editable into the managed environment, edited here,
`tether sync`ed, and used by the next cell of the same running kernel; with autoreload
off the same kernel keeps the old code."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_tether import jupyter_api
from jupyter_tether.remote import envs, syncing
from testing.helpers.cli import Tether
from testing.helpers.jupyter import new_kernel, run_on
from testing.helpers.users import home_of
from testing.sshd import host_entry, start_sshd, stop_sshd
from tests.conftest import IS_ROOT, PROV_USER, SandboxTopology

pytestmark = [
    pytest.mark.e2e,
    # it provisions tether-prov: fresh again when the module ends (conftest)
    pytest.mark.usefixtures("prov_left_fresh"),
    pytest.mark.skipif(not IS_ROOT, reason="a fresh account and its own sshd need root"),
]

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "mypkg"
version = "0.1"
"""


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A local package folder: ``mypkg.answer()`` returns 1. The server has no copy from
    an earlier session (the account's reset keeps ROOT_DIR; a stale copy is a conflict)."""
    shutil.rmtree(home_of(PROV_USER) / ".tether-develop", ignore_errors=True)
    root = tmp_path / "mypkg"
    (root / "mypkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    answer(root, 1)
    return root


def answer(root: Path, value: int) -> None:
    (root / "mypkg" / "__init__.py").write_text(f"def answer():\n    return {value}\n")


def up(t: Tether, name: str) -> dict[str, Any]:
    res = t("up", name, "--no-browser", "--json")
    assert res.rc == 0, res.err
    info: dict[str, Any] = json.loads(res.out)
    return info


def token_of(info: dict[str, Any]) -> str:
    return str(info["url"].split("token=")[1])


def sync_pushes(t: Tether, name: str) -> list[str]:
    # What up just wrote on the server counts as "changed in the last 2 s" there (it is
    # not listed as settled) until then; the sync would defer it.
    time.sleep(syncing.SETTLE + 0.5)
    res = t("sync", name, "--json")
    assert res.rc == 0, res.err
    (pair,) = json.loads(res.out)
    assert pair["remote"] == ".tether-develop/mypkg"
    return list(pair["pushed"])


def env_of(name: str) -> Path:
    """The profile's one managed environment on the server."""
    root = home_of(PROV_USER) / ".local/share/jupyter-tether/envs"
    (env,) = [p for p in root.glob(f"{name}-*") if (p / envs.MARKER).is_file()]
    return env


def kernel_ids(info: dict[str, Any]) -> list[str]:
    code, body = jupyter_api.request(info["local_port"], "GET", "/api/kernels", token_of(info))
    assert code == 200, body
    return [k["id"] for k in json.loads(body)]


def test_an_edit_synced_from_here_is_used_by_the_next_cell_without_a_restart(
    ptether: Tether, prov_sshd: str, package: Path
) -> None:
    name = prov_sshd
    ptether.profile(name, develop=[str(package)], autoreload=True)
    info = up(ptether, name)
    port, token = info["local_port"], token_of(info)
    synced = home_of(PROV_USER) / ".tether-develop" / "mypkg"
    env = env_of(name)
    assert (env / envs.AUTORELOAD_FILE).read_text() == envs.AUTORELOAD_CONFIG
    assert (synced / "mypkg" / "__init__.py").read_text() == "def answer():\n    return 1\n"

    kernel = new_kernel(port, token)
    first = run_on(
        port, token, kernel, "import os, mypkg; kept = os.getpid(); print(mypkg.answer())"
    )
    assert first == "1"
    # the import comes from the synced folder, through the editable install
    assert run_on(port, token, kernel, "print(mypkg.__file__)") == str(
        synced / "mypkg" / "__init__.py"
    )

    answer(package, 2)
    assert sync_pushes(ptether, name) == ["mypkg/__init__.py"]
    # the same kernel (same id, same process, the variable from before) runs the new code
    after = run_on(port, token, kernel, "print(mypkg.answer(), kept == os.getpid())")
    assert after == "2 True"
    assert kernel in kernel_ids(info)

    # Control: autoreload = false, the same env (the spec did not change), a new server.
    ptether("down", name)
    ptether.profile(name, develop=[str(package)], autoreload=False)
    info = up(ptether, name)
    port, token = info["local_port"], token_of(info)
    assert env_of(name) == env and not (env / envs.AUTORELOAD_FILE).exists()
    kernel = new_kernel(port, token)
    assert run_on(port, token, kernel, "import mypkg; print(mypkg.answer())") == "2"
    answer(package, 3)
    assert sync_pushes(ptether, name) == ["mypkg/__init__.py"]
    assert run_on(port, token, kernel, "print(mypkg.answer())") == "2"  # the old code
    # ... though the server has the new one: a fresh kernel imports it
    assert run_in_new_kernel(port, token, "import mypkg; print(mypkg.answer())") == "3"


def run_in_new_kernel(port: int, token: str, code: str) -> str:
    return run_on(port, token, new_kernel(port, token), code)


@pytest.fixture
def prov_far(
    topology: SandboxTopology,
    sandbox_dir: Path,
    client_key: Path,
    prov_user: str,
    ptether: Tether,
) -> Iterator[str]:
    """An sshd for tether-prov inside the server namespace (no route out), port 2222."""
    server = start_sshd(
        sandbox_dir / "sshd-prov-far",
        users=[prov_user],
        listen=topology.topology.server_address,
        port=2222,
        netns=topology.topology.server_ns,
        client_key=client_key,
    )
    try:
        topology.ssh_config.add(
            host_entry(server, "tt-prov-far", user=prov_user, proxy_jump=topology.jump_host)
        )
        yield "tt-prov-far"
    finally:
        ptether("down", "tt-prov-far")  # while its sshd still runs
        stop_sshd(server)


@pytest.mark.netns
def test_an_offline_server_builds_the_editable_install_from_wheels_sent_from_here(
    ptether: Tether, prov_far: str, package: Path
) -> None:
    (package / "pyproject.toml").write_text(PYPROJECT + 'dependencies = ["toolz"]\n')
    ptether.profile(prov_far, develop=[str(package)], autoreload=True)
    res = ptether("up", prov_far, "--no-browser", "--json")
    assert res.rc == 0, res.err
    info = json.loads(res.out)
    # built offline (the namespace has no route out), from wheels sent from here
    assert json.loads((env_of(prov_far) / envs.MARKER).read_text())["offline"] is True
    wheels = sorted(
        p.name for p in (home_of(PROV_USER) / ".local/share/jupyter-tether/wheels").glob("*.whl")
    )
    # the build backend, what its editable build asked for, and the dependency
    assert any(w.startswith("hatchling-") for w in wheels)
    assert any(w.startswith("editables-") for w in wheels)
    assert any(w.startswith("toolz-") for w in wheels)
    code = "import mypkg, toolz; print(mypkg.answer(), mypkg.__file__)"
    got = run_in_new_kernel(info["local_port"], token_of(info), code)
    assert got == f"1 {home_of(PROV_USER) / '.tether-develop/mypkg/mypkg/__init__.py'}"
