"""Provisioning end to end: a fresh non-root account that has nothing but the
system python3 gets JupyterLab and packages, online and through the offline path.

The account ``tether-prov`` is reset at the start of the session (no uv, no envs), and
served by an sshd of its own (alias ``tt-prov``; ``tt-prov-far`` inside the topology's
server namespace, which has no route out). Workstation-side downloads share one cache
for the session, so later tests reuse what earlier ones fetched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_tether import jupyter_api, provision
from jupyter_tether.provision import builder_calls
from testing.helpers.cli import Tether
from testing.helpers.jupyter import run_in_kernel
from testing.helpers.users import as_user, home_of
from testing.sshd import host_entry, start_sshd, stop_sshd
from tests.conftest import IS_ROOT, PROV_USER, SandboxSshConfig, SandboxTopology
from tests.helpers import remote_procs

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not IS_ROOT, reason="a fresh account and its own sshd need root"),
]

PACKAGES = ["numpy", "pandas", "matplotlib", "requests"]
IMPORT_ALL = "import numpy, pandas, matplotlib, requests; print(pandas.__version__)"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def ptether(tether: Tether, prov_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tether]:
    """The CLI with the session's download cache."""
    monkeypatch.setenv("JUPYTER_TETHER_CACHE_DIR", str(prov_cache))
    yield tether
    for name in list(tether.profiles):
        tether("down", name)


def data_dir(user: str = PROV_USER) -> Path:
    return home_of(user) / ".local/share/jupyter-tether"


def envs_of(profile: str) -> list[Path]:
    root = data_dir() / "envs"
    return sorted(p for p in root.glob(f"{profile}-*") if (p / ".tether-env.json").is_file())


def env_python_of(profile: str) -> Path:
    (env,) = envs_of(profile)
    return env / "bin" / "python"


def up_json(t: Tether, name: str) -> dict[str, Any]:
    res = t("up", name, "--no-browser", "--json")
    assert res.rc == 0, res.err
    info: dict[str, Any] = json.loads(res.out)
    return info


def token_of(info: dict[str, Any]) -> str:
    return str(info["url"].split("token=")[1])


def kernel_says(info: dict[str, Any], code: str) -> str:
    return run_in_kernel(info["local_port"], token_of(info), code)


# --------------------------------------------------------------------------- online


def test_fresh_account_gets_jupyterlab_and_packages(ptether: Tether, prov_sshd: str) -> None:
    uv = data_dir() / "bin" / "uv"
    assert not uv.exists()
    which = as_user(PROV_USER, ["sh", "-lc", "command -v uv jupyter"])
    assert which.stdout.strip() == "", "the account is not fresh"

    ptether.profile(prov_sshd, packages=PACKAGES)
    info = up_json(ptether, prov_sshd)
    assert {"env", "build"} <= set(info["timings"])
    (wheel,) = (Path(os.environ["JUPYTER_TETHER_CACHE_DIR"]) / "uv").glob("*/uv-*.whl")
    assert info["bytes_copied"] == wheel.stat().st_size  # online: only uv, as it is
    assert re.fullmatch(r"\d+\.\d+\.\d+", kernel_says(info, IMPORT_ALL))
    # uv came from the workstation and sits in tether's bin dir
    assert os.access(uv, os.X_OK)
    assert as_user(PROV_USER, [str(uv), "--version"]).stdout.startswith(
        f"uv {provision.UV_VERSION}"
    )
    (env,) = envs_of(prov_sshd)
    marker = json.loads((env / ".tether-env.json").read_text())
    assert marker["offline"] is False
    assert any(r.startswith("jupyter_server>=2.21") for r in marker["requirements"])
    assert not list((data_dir() / "envs" / ".incoming").iterdir())
    # left out for a fast start (provision.LEFT_OUT); jsonschema does without it
    assert marker["left_out"] == ["rfc3987-syntax"]
    absent = "import importlib.util as u, jsonschema; print(u.find_spec('rfc3987_syntax'))"
    assert kernel_says(info, absent) == "None"

    # Warm: an unchanged spec does no provisioning work at all (not even a round trip).
    built_at = (env / ".tether-env.json").stat().st_mtime
    ptether("down", prov_sshd)
    start = time.monotonic()
    again = up_json(ptether, prov_sshd)
    assert "env" not in again["timings"] and "build" not in again["timings"]
    assert again["bytes_copied"] == 0
    assert envs_of(prov_sshd) == [env]
    assert (env / ".tether-env.json").stat().st_mtime == built_at
    assert kernel_says(again, "import pandas; print(pandas.__version__)")
    assert time.monotonic() - start < 60


def test_progress_is_live_on_a_terminal(ptether: Tether, prov_sshd: str) -> None:
    """On a terminal the long steps redraw one line with sizes and rates, or the time so
    far, and take it back; the plain summary lines stay. (Piped, as everywhere else in
    these tests, there are no control characters at all: see the other tests' output.)"""
    (data_dir() / "bin" / "uv").unlink(missing_ok=True)  # so that it is copied again
    ptether.profile(prov_sshd)  # a spec of its own: a build
    leader, follower = os.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "jupyter_tether", "up", prov_sshd, "--no-browser"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=follower,
            env={**os.environ, "TERM": "xterm"},
        )
        os.close(follower)
        chunks = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # until the child closes its end
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer has gone
                break
            if not chunk:
                break
            chunks.append(chunk)
        out, _ = child.communicate(timeout=60)
    finally:
        os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    assert child.returncode == 0, screen
    assert out.decode().strip().startswith("http://127.0.0.1:")
    uv = f"copying uv {provision.UV_VERSION}"
    assert re.search(rf"\r  {re.escape(uv)}: \d+\.\d of \d+\.\d MB \(\d+%\)", screen), screen
    assert re.search(r"\r  installing on the server: \d+\.\d s\x1b\[K", screen), screen
    assert "\r\x1b[K" in screen  # taken back
    assert re.search(rf"copied uv {re.escape(provision.UV_VERSION)}: [\d.]+ MB in ", screen)


def test_killed_install_is_cleaned_up_and_rebuilt(ptether: Tether, prov_sshd: str) -> None:
    ptether.profile(prov_sshd, packages=PACKAGES)
    up_json(ptether, prov_sshd)  # the previous good env (warm when an earlier test built it)
    ptether("down", prov_sshd)
    ptether.profile(prov_sshd, packages=[*PACKAGES, "six"])
    env = {**os.environ}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_tether", "up", prov_sshd, "--no-browser", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while not killed and proc.poll() is None and time.monotonic() < deadline:
            for line in subprocess.run(
                ["ps", "-u", PROV_USER, "-o", "pid=,ppid=,args="],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.splitlines():
                pid, ppid, args = line.split(None, 2)
                if "uv pip install" in args or ("/bin/uv pip install" in args):
                    # the builder and the uv process below it, as a dropped link would;
                    # the builder first, or it sees uv die and cleans up after itself
                    for victim in (ppid, pid):
                        subprocess.run(["kill", "-9", victim], check=False)
                    killed.append(args)
                    break
            time.sleep(0.01)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed, "never saw the remote uv pip install"
    assert proc.returncode != 0, err
    incoming = data_dir() / "envs" / ".incoming"
    assert list(incoming.iterdir()), "the interrupted build left no temp dir to clean"
    assert not [e for e in envs_of(prov_sshd) if "six" in (e / ".tether-env.json").read_text()]

    info = up_json(ptether, prov_sshd)
    assert not list(incoming.iterdir())
    assert kernel_says(info, "import six, pandas; print(six.__name__)") == "six"


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True
    )
    shutil.chown(path, PROV_USER, PROV_USER)


def test_disk_full_fails_clearly_and_keeps_the_previous_env(
    ptether: Tether, prov_sshd: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ptether.profile(prov_sshd, packages=PACKAGES)
    up_json(ptether, prov_sshd)
    ptether("down", prov_sshd)
    before = envs_of(prov_sshd)
    incoming = data_dir() / "envs" / ".incoming"
    _mount_tmpfs(incoming, "40m")
    try:
        ptether.profile(prov_sshd, packages=[*PACKAGES, "tomli"])
        # 1. the check before building: fails early, with the numbers
        res = ptether("up", prov_sshd, "--no-browser")
        assert res.rc == 10, res.err
        assert re.search(r"not enough disk space .*: \d+ MB free, at least \d+ MB needed", res.err)
        # 2. the disk fills up mid-install: reported as such, nothing half-built stays
        monkeypatch.setattr(builder_calls, "MIN_FREE_MB", 0)
        res = ptether("up", prov_sshd, "--no-browser")
        assert res.rc == 10, res.err
        assert "disk is full" in res.err, res.err
        assert not list(incoming.iterdir())
        assert envs_of(prov_sshd) == before
        # the previous environment still starts
        ptether.profile(prov_sshd, packages=PACKAGES)
        info = up_json(ptether, prov_sshd)
        assert "build" not in info["timings"]
        assert re.fullmatch(r"\d+\.\d+\.\d+", kernel_says(info, IMPORT_ALL))
    finally:
        ptether("down", prov_sshd)
        subprocess.run(["umount", "-l", str(incoming)], check=False)


# --------------------------------------------------------------------------- modules


def test_modules_put_the_python_on_path(ptether: Tether, prov_sshd: str, sandbox_dir: Path) -> None:
    if not Path("/usr/share/modules/init/sh").is_file():
        pytest.skip("environment-modules is not installed")
    root = sandbox_dir / "modules"
    bindir = root / "sw" / "testpy" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    wrapper = bindir / "python3"
    wrapper.write_text('#!/bin/sh\nexec /usr/bin/python3 "$@"\n')
    wrapper.chmod(0o755)
    modfile = root / "modulefiles" / "testpy" / "1.0"
    modfile.parent.mkdir(parents=True, exist_ok=True)
    modfile.write_text(f"#%Module1.0\nprepend-path PATH {bindir}\nsetenv TESTPY_LOADED 1\n")
    for p in (root, *root.rglob("*")):
        p.chmod(p.stat().st_mode | 0o755)
    ptether.profile(prov_sshd, packages=PACKAGES)
    up_json(ptether, prov_sshd)  # another environment, to register as an extra kernel
    ptether("down", prov_sshd)
    (other,) = envs_of(prov_sshd)[-1:]
    name = "tt-prov-mod"
    ptether.profile(
        name,
        ssh=prov_sshd,
        modules=["testpy/1.0"],
        packages=["requests"],
        kernels=[str(other)],
        env_vars={"MODULEPATH": str(root / "modulefiles")},
    )
    info = up_json(ptether, name)
    status, body = jupyter_api.request(
        info["local_port"], "GET", "/api/kernelspecs", token_of(info)
    )
    assert status == 200
    specs = json.loads(body)["kernelspecs"]
    assert f"tether-{other.name}".lower() in specs, sorted(specs)
    assert specs["python3"]["spec"]["argv"][0] in ("python", str(env_python_of(name)))
    (env,) = envs_of(name)
    marker = json.loads((env / ".tether-env.json").read_text())
    assert marker["python"] == str(wrapper)
    # the module is loaded for Jupyter too: kernels see its environment
    assert kernel_says(info, "import os, requests; print(os.environ.get('TESTPY_LOADED'))") == "1"


# --------------------------------------------------------------------------- offline


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
def test_offline_server_gets_wheels_from_the_workstation(
    ptether: Tether, prov_far: str, topology: SandboxTopology
) -> None:
    ns = topology.topology.server_ns
    routes = subprocess.run(
        ["ip", "-n", ns, "route", "show", "default"], capture_output=True, text=True, check=True
    )
    assert routes.stdout.strip() == "", "the server namespace must have no way out"
    ptether.profile(prov_far, packages=PACKAGES)
    (data_dir() / "bin" / "uv").unlink(missing_ok=True)  # so that it is copied again
    res = ptether("up", prov_far, "--no-browser")
    assert res.rc == 0, res.err
    assert "cannot reach the package index" in res.err
    # uv went over while the wheels downloaded, and the build found it complete
    assert "copy uv" in res.err and "while the wheels download" in res.err
    assert os.access(data_dir() / "bin" / "uv", os.X_OK)
    assert re.search(r"copied \d+ wheels", res.err)
    url = res.out.strip().splitlines()[-1]
    info = {"url": url, "local_port": int(url.split(":")[2].split("/")[0])}
    assert re.fullmatch(r"\d+\.\d+\.\d+", kernel_says(info, IMPORT_ALL))
    (env,) = envs_of(prov_far)
    marker = json.loads((env / ".tether-env.json").read_text())
    # the build ran with --offline --no-index --find-links (see builder.uv_install_argv)
    assert marker["offline"] is True
    wheels = sorted(p.name for p in (data_dir() / "wheels").glob("*.whl"))
    assert any(w.startswith("pandas-") for w in wheels)
    assert not remote_procs(PROV_USER, "uv pip")

    # A changed spec sends only the wheels the server lacks.
    ptether("down", prov_far)
    ptether.profile(prov_far, packages=[*PACKAGES, "toolz"])  # no dependency of the rest
    again = up_json(ptether, prov_far)
    (toolz,) = (data_dir() / "wheels").glob("toolz-*.whl")
    # one wheel in a tar (headers and padding: at most 20 KiB), and no uv this time
    assert toolz.stat().st_size <= again["bytes_copied"] < toolz.stat().st_size + 20480

    # docopt publishes only an sdist: pure Python, so it is built into a wheel here.
    ptether("down", prov_far)
    ptether.profile(prov_far, packages=[*PACKAGES, "toolz", "docopt==0.6.2"])
    res = ptether("up", prov_far, "--no-browser")
    assert res.rc == 0, res.err
    assert "built docopt==0.6.2 here from its sdist (pure Python)" in res.err
    assert list((data_dir() / "wheels").glob("docopt-0.6.2-py*-none-any.whl"))
    url = res.out.strip().splitlines()[-1]
    info = {"url": url, "local_port": int(url.split(":")[2].split("/")[0])}
    assert kernel_says(info, "import docopt; print(docopt.__version__)") == "0.6.2"


# --------------------------------------------------------------------------- env, install


def test_env_shows_and_install_adds(ptether: Tether, prov_sshd: str) -> None:
    ptether.profile(prov_sshd, packages=PACKAGES)
    info = up_json(ptether, prov_sshd)
    res = ptether("env", prov_sshd, "--json")
    assert res.rc == 0, res.err
    described = json.loads(res.out)
    (env,) = [e for e in envs_of(prov_sshd) if Path(described["env"]) == e]
    names = {name.lower().replace("_", "-") for name, _ in described["packages"]}
    assert {"pandas", "jupyterlab", "jupyter-server", "numpy"} <= names
    assert described["size_mb"] > 50 and described["managed"]
    assert described["python"].startswith("3.")

    res = ptether("install", prov_sshd, "toolz")
    assert res.rc == 0, res.err
    assert "add it to `packages`" in res.out  # honest: the spec does not have it
    assert kernel_says(info, "import toolz; print(toolz.__name__)") == "toolz"
    record = json.loads(
        (Path(os.environ["JUPYTER_TETHER_STATE_DIR"]) / "servers" / f"{prov_sshd}.json").read_text()
    )
    assert record["installed"] == ["toolz"]
    text = ptether("env", prov_sshd)
    assert text.rc == 0 and "added later: toolz" in text.out
    marker = json.loads((env / ".tether-env.json").read_text())
    assert marker["added"] == ["toolz"]
    # a package tether leaves out by default comes in when asked for by name
    res = ptether("install", prov_sshd, "rfc3987-syntax")
    assert res.rc == 0, res.err
    assert kernel_says(info, "import rfc3987_syntax as r; print(r.__name__)") == "rfc3987_syntax"


# --------------------------------------------------------------------------- doctor


def doctor(t: Tether, name: str) -> tuple[int, dict[str, dict[str, str]]]:
    res = t("doctor", name, "--json")
    assert res.rc in (0, 6), res.err
    data = json.loads(res.out)
    assert data["ok"] == (res.rc == 0)
    return res.rc, {c["name"]: c for c in data["checks"]}


def test_doctor_healthy_host(ptether: Tether, prov_sshd: str) -> None:
    ptether.profile(prov_sshd, packages=PACKAGES)
    rc, checks = doctor(ptether, prov_sshd)
    assert rc == 0
    for name in (
        "python",
        "ssl",
        "zlib",
        "ctypes",
        "sqlite3",
        "glibc",
        "disk",
        "tmux",
        "modules",
        "index",
        "forwarding",
    ):
        assert checks[name]["status"] == "ok", checks[name]
    text = ptether("doctor", prov_sshd)
    assert text.rc == 0 and "fail" not in text.out and "ok    forwarding" in text.out


def test_doctor_broken_conditions(
    ptether: Tether,
    prov_sshd: str,
    sandbox_dir: Path,
    client_key: Path,
    sandbox_ssh_config: SandboxSshConfig,
) -> None:
    # 1. the profile's python does not exist
    ptether.profile(prov_sshd, python="/nonexistent/bin/python3")
    rc, checks = doctor(ptether, prov_sshd)
    assert rc == 6 and checks["python"]["status"] == "fail"
    assert "/nonexistent/bin/python3" in checks["python"]["detail"]

    # 2. an interpreter built without ssl and sqlite3 (their imports fail for real)
    shadow = sandbox_dir / "broken-python" / "shadow"
    shadow.mkdir(parents=True, exist_ok=True)
    for mod in ("ssl", "sqlite3"):
        (shadow / f"{mod}.py").write_text(f"raise ImportError('built without {mod}')\n")
    wrapper = shadow.parent / "python3"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={shadow} exec /usr/bin/python3 "$@"\n')
    wrapper.chmod(0o755)
    ptether.profile(prov_sshd, python=str(wrapper))
    rc, checks = doctor(ptether, prov_sshd)
    assert rc == 6
    assert checks["ssl"]["status"] == "fail" and "OpenSSL" in checks["ssl"]["fix"]
    assert checks["sqlite3"]["status"] == "fail"
    assert checks["zlib"]["status"] == "ok"

    # 3. a module that does not exist
    ptether.profile(prov_sshd, packages=[], modules=["no-such-module/1.0"])
    rc, checks = doctor(ptether, prov_sshd)
    assert rc == 6 and checks["modules"]["status"] == "fail"
    assert "no-such-module" in checks["modules"]["detail"]

    # 4. a full disk where environments go
    ptether.profile(prov_sshd, packages=[])
    data = data_dir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data)], check=True)
    try:
        shutil.chown(data, PROV_USER, PROV_USER)
        rc, checks = doctor(ptether, prov_sshd)
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)
    assert rc == 6 and checks["disk"]["status"] == "fail"
    assert re.search(r"\d+ MB free", checks["disk"]["detail"])

    # 5. an sshd that refuses to forward to Unix sockets
    server = start_sshd(
        sandbox_dir / "sshd-prov-nofwd",
        users=[PROV_USER],
        client_key=client_key,
        extra_config=["AllowStreamLocalForwarding no"],
    )
    try:
        sandbox_ssh_config.add(host_entry(server, "tt-prov-nofwd", user=PROV_USER))
        ptether.profile("tt-prov-nofwd", packages=[])
        rc, checks = doctor(ptether, "tt-prov-nofwd")
    finally:
        stop_sshd(server)
    assert checks["forwarding"]["status"] == "warn"
    assert "AllowStreamLocalForwarding" in checks["forwarding"]["fix"]


def test_no_usable_python_lists_what_was_tried(
    ptether: Tether, prov_sshd: str, sandbox_dir: Path
) -> None:
    """Chain steps 3 and 4 fail here for real: uv's CPython builds come from a file://
    mirror that is empty (so nothing leaves this machine), and the source build lacks
    headers or a tarball. The error names every step and why it failed."""
    mirror = sandbox_dir / "empty-python-mirror"
    mirror.mkdir(exist_ok=True)
    ptether.profile(
        prov_sshd,
        python="3.13",
        packages=[],
        build_from_source=True,
        env_vars={"UV_PYTHON_INSTALL_MIRROR": mirror.as_uri()},
    )
    res = ptether("up", prov_sshd, "--no-browser")
    assert res.rc == 10, res.err
    assert "no usable Python >= 3.9" in res.err
    assert "does not match 3.13" in res.err  # step 2: the system python3 is 3.11
    assert "uv python install 3.13:" in res.err  # step 3
    assert "source build:" in res.err  # step 4
    assert "UV_PYTHON_INSTALL_MIRROR" in res.err  # the hint says how to get further
