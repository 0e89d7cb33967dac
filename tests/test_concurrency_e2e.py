"""Concurrency and load: ten `up`s at once make one server; many accounts on
one host each get their own server, and reach only their own.

``TETHER_ACCOUNTS`` sets how many accounts (default 20, as the issue asks; fewer for a quick run).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_tether import jupyter_api
from testing.accounts import ensure_user
from testing.helpers.cli import Tether
from testing.helpers.users import as_user
from testing.sshd import host_entry, start_sshd, stop_sshd
from tests.conftest import IS_ROOT, LocalSshd, SandboxSshConfig
from tests.helpers import remote_procs

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not IS_ROOT, reason="needs root")]

ACCOUNTS = int(os.environ.get("TETHER_ACCOUNTS", "20"))


def up_subprocess(name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jupyter_tether", "up", name, "--no-browser", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def test_ten_parallel_ups_yield_one_server(
    tether: Tether, sshd: LocalSshd, jupyter_env: Path
) -> None:
    tether.profile("tt-server", env=str(jupyter_env))
    try:
        procs = [up_subprocess("tt-server") for _ in range(10)]
        results = [p.communicate(timeout=300) for p in procs]
        for p, (_out, err) in zip(procs, results, strict=True):
            assert p.returncode == 0, err
        infos = [json.loads(out) for out, _ in results]
        assert len({i["pid"] for i in infos}) == 1
        assert len({i["local_port"] for i in infos}) == 1
        assert len({i["url"] for i in infos}) == 1
        assert sum(not i["reused"] for i in infos) == 1
        assert len(remote_procs(sshd.user, "jupyter-lab")) == 1
        assert len({i["supervisor"] for i in infos}) == 1
        token = infos[0]["url"].split("token=")[1]
        assert jupyter_api.status(infos[0]["local_port"], token) is not None
    finally:
        tether("down", "tt-server")


@pytest.fixture
def accounts(
    tether: Tether,
    sandbox_dir: Path,
    sandbox_ssh_config: SandboxSshConfig,
    client_key: Path,
) -> Iterator[list[str]]:
    """ACCOUNTS ordinary accounts on one sshd, with aliases tt-m0, tt-m1, ..."""
    users = [ensure_user(f"tether-m{i}").pw_name for i in range(ACCOUNTS)]
    server = start_sshd(sandbox_dir / "sshd-many", users=users, client_key=client_key)
    try:
        sandbox_ssh_config.add(
            *(host_entry(server, f"tt-m{i}", user=u) for i, u in enumerate(users))
        )
        yield users
    finally:
        for i in range(ACCOUNTS):
            tether("down", f"tt-m{i}")
        stop_sshd(server)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_many_accounts_each_reach_only_their_own(
    tether: Tether,
    accounts: list[str],
    jupyter_env: Path,
    record_property: Callable[[str, object], None],
) -> None:
    names = [f"tt-m{i}" for i in range(len(accounts))]
    for name in names:
        tether.profile(name, env=str(jupyter_env))

    def up(name: str) -> dict[str, Any]:
        proc = up_subprocess(name)
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, f"{name}: {err}"
        info: dict[str, Any] = json.loads(out)
        return info

    # At most four start at once: 2 cores, and JupyterLab's start-up is CPU-bound.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        infos = list(pool.map(up, names))
    ports = [i["local_port"] for i in infos]
    tokens = [i["url"].split("token=")[1] for i in infos]
    socks = [i["remote"] for i in infos]
    assert len(set(ports)) == len(names) and len(set(socks)) == len(names)
    assert len({i["pid"] for i in infos}) == len(names)
    for k, user in enumerate(accounts):
        assert len(remote_procs(user, "jupyter-lab")) == 1, user
        assert jupyter_api.status(ports[k], tokens[k]) is not None
        # Another account's token opens nothing here...
        other = (k + 1) % len(names)
        if other != k:
            code, _ = jupyter_api.request(ports[k], "GET", "/api/status", tokens[other])
            assert code == 403
            # ...and its owner cannot connect to this account's socket.
            probe = (
                "import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
                "try: s.connect(sys.stdin.read())\nexcept OSError as e: print(type(e).__name__)\n"
                "else: print('CONNECTED')"
            )
            res = as_user(accounts[other], ["/usr/bin/python3", "-c", probe], input=socks[k])
            assert res.stdout.strip() == "PermissionError", res.stdout + res.stderr
    # Memory, for the benchmark report: an idle server (Jupyter, no kernel) and a supervisor.
    servers = [rss_kib(int(i["pid"])) for i in infos]
    supervisors = [rss_kib(int(i["supervisor"])) for i in infos]
    record_property("idle_server_rss_mib", round(sum(servers) / len(servers) / 1024, 1))
    record_property("supervisor_rss_mib", round(sum(supervisors) / len(supervisors) / 1024, 1))
    print(
        f"\n{len(names)} accounts: idle server {sum(servers) / len(servers) / 1024:.0f} MiB, "
        f"supervisor {sum(supervisors) / len(supervisors) / 1024:.0f} MiB (mean RSS)"
    )
