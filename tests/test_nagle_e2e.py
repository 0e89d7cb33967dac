"""`tether doctor` through a real jump host says which hop keeps Nagle on, and why."""

from __future__ import annotations

import json

from jupyter_tether import nagle, proc
from testing.helpers.cli import Tether
from tests.conftest import SandboxTopology


def test_doctor_reports_nagle_per_hop_behind_a_jump_host(
    tether: Tether, topology: SandboxTopology
) -> None:
    # What the checks are expected to say: the versions read from the real sshds.
    versions = nagle.read_versions("tt-far", topology.ssh_config.path)
    assert versions.has_jump
    assert versions.jump == nagle.parse_version(proc.run(["ssh", "-V"], timeout=10).stderr), (
        "the jump's sshd is this machine's OpenSSH"
    )
    res = tether("doctor", "tt-far", "--json")
    assert res.rc in (0, 6), res.err
    checks = {c["name"]: c for c in json.loads(res.out)["checks"]}
    outer, _ = nagle.hops(versions)
    assert checks["nagle-jump"]["status"] == ("ok" if outer.ok else "warn")
    assert checks["nagle-jump"]["detail"].startswith("workstation-jump hop:")
    assert checks["nagle-far"]["status"] == "ok"
    if versions.local and versions.local < nagle.FIXED:
        assert "10.1" in checks["nagle-jump"]["fix"]
