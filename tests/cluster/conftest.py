"""The Slurm lab (:mod:`testing.cluster`): a login node and two compute nodes.

``slurm_cluster`` (session) starts it once, serving ``tether-test`` and ``tether-other``
on the login node's sshd, and adds their aliases (``login-tether-test``, ...) to the
session's sandbox ssh config. ``lab`` (per test) hands it over and puts it back to a
quiet state afterwards (link up, controller running, nodes resumed, no jobs). Tests
that use either get the ``slurm`` and ``netns`` markers; they skip without root or
without the Slurm and munge binaries.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.cluster import Cluster, missing_binaries
from tests.conftest import IS_ROOT, SandboxSshConfig


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixturenames = getattr(item, "fixturenames", ())
        if "slurm_cluster" in fixturenames or "lab" in fixturenames:
            item.add_marker(pytest.mark.slurm)
            item.add_marker(pytest.mark.netns)


@pytest.fixture(scope="session")
def slurm_cluster(
    client_key: Path, sandbox_ssh_config: SandboxSshConfig, remote_user: str, other_user: str
) -> Iterator[Cluster]:
    """The running lab; ``lab`` is the per-test view that cleans up after each test."""
    if not IS_ROOT:
        pytest.skip("the Slurm lab needs root")
    missing = missing_binaries()
    if missing:
        pytest.skip(f"the Slurm lab needs {', '.join(missing)}")
    cluster = Cluster(
        users=[remote_user, other_user],
        client_key=client_key,
        keep_files=os.environ.get("JUPYTER_TETHER_KEEP_SANDBOX") == "1",
    )
    cluster.start()
    try:
        sandbox_ssh_config.add(*cluster.host_entries())
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def lab(slurm_cluster: Cluster) -> Iterator[Cluster]:
    """The session's lab, put back to a quiet state after the test."""
    yield slurm_cluster
    slurm_cluster.reset()
