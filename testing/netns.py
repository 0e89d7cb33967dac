"""workstation -- jump host -- server, in two network namespaces. Root only."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from jupyter_tether.errors import TetherError
from jupyter_tether.proc import run, terminate
from testing._run import POLL, must, require_root

BLACKHOLE = "198.18.0.0/15"


def exec_argv(namespace: str) -> list[str]:
    """The argv prefix that runs a command inside ``namespace``."""
    return ["ip", "netns", "exec", namespace]


@dataclass(frozen=True)
class Topology:
    """workstation (this namespace) -- jump host -- server, in two network namespaces.

    The workstation reaches ``jump_address``; only the jump host reaches
    ``server_address``. The jump host does not forward packets, and the blackhole
    route for 198.18.0.0/15 keeps the workstation's packets for the server (or for a
    cut link) on this machine.
    """

    prefix: str
    slot: int
    jump_ns: str
    server_ns: str
    host_if: str  # the workstation's end of the workstation--jump link
    host_address: str
    jump_address: str  # the jump host, as the workstation sees it
    jump_inner_address: str  # the jump host, as the server sees it
    server_address: str

    def cut(self) -> None:
        """Take the workstation--jump link down, as if the network went away."""
        must(["ip", "link", "set", self.host_if, "down"], "taking the link down")

    def restore(self) -> None:
        """Bring the link back up (after :meth:`cut`) and wait until it carries packets."""
        must(["ip", "link", "set", self.host_if, "up"], "bringing the link up")
        operstate = Path("/sys/class/net") / self.host_if / "operstate"
        deadline = time.monotonic() + 5
        while operstate.read_text().strip() != "up":
            if time.monotonic() > deadline:
                raise TetherError(f"{self.host_if} did not come up within 5 s")
            time.sleep(POLL)


def unique_prefix(base: str = "tt") -> str:
    """A namespace prefix unique to this process (short enough for interface names)."""
    return f"{base}{os.getpid()}"


def _check_prefix(prefix: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9]{0,11}", prefix):
        raise TetherError(
            f"namespace prefix {prefix!r} must be 1-12 lowercase letters or digits",
            hint="it becomes part of interface names, which are limited to 15 characters",
        )


def _names(prefix: str) -> tuple[str, str, str]:
    return f"{prefix}-jump", f"{prefix}-srv", f"{prefix}-h"


def _slot_addresses(slot: int) -> tuple[str, str, str, str]:
    """host, jump (outer), jump (inner), server addresses of ``slot``; slot 0 is
    198.18.0.1 / 198.18.0.2 / 198.18.1.1 / 198.18.1.2."""
    outer, inner = 2 * slot, 2 * slot + 1
    return f"198.18.{outer}.1", f"198.18.{outer}.2", f"198.18.{inner}.1", f"198.18.{inner}.2"


def _used_slots() -> set[int]:
    out = run(["ip", "-4", "-o", "addr", "show"], timeout=10).stdout
    return {int(m.group(1)) // 2 for m in re.finditer(r"inet 198\.18\.(\d+)\.\d+/", out)}


def free_slot() -> int:
    """The first address slot (see :func:`_slot_addresses`) no interface here uses."""
    used = _used_slots()
    return next(s for s in range(128) if s not in used)


def ensure_blackhole() -> None:
    """Keep packets for 198.18.0.0/15 on this machine, whatever the links do. Root only."""
    require_root("adding a blackhole route")
    shown = run(["ip", "route", "show", "type", "blackhole", BLACKHOLE], timeout=10).stdout
    if BLACKHOLE not in shown:
        must(["ip", "route", "add", "blackhole", BLACKHOLE, "metric", "1000"], "blackhole route")


def build_topology(prefix: str, *, slot: int | None = None) -> Topology:
    """Create namespaces ``<prefix>-jump`` and ``<prefix>-srv`` and link them. Root only.

    ``slot`` picks the addresses (see :func:`_slot_addresses`); by default the first
    slot no interface here uses, so that runs with different prefixes can coexist.
    Leftovers of an earlier run with the same prefix are removed first.
    """
    _check_prefix(prefix)
    require_root("building network namespaces")
    ensure_blackhole()
    teardown_prefix(prefix)
    if slot is None:
        slot = free_slot()
    jump_ns, server_ns, host_if = _names(prefix)
    host_addr, jump_addr, jump_inner, server_addr = _slot_addresses(slot)
    topology = Topology(
        prefix=prefix,
        slot=slot,
        jump_ns=jump_ns,
        server_ns=server_ns,
        host_if=host_if,
        host_address=host_addr,
        jump_address=jump_addr,
        jump_inner_address=jump_inner,
        server_address=server_addr,
    )
    server_peer = ["peer", "name", "eth0", "netns", server_ns]
    steps = [
        ["ip", "netns", "add", jump_ns],
        ["ip", "netns", "add", server_ns],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", "wan", "netns", jump_ns],
        ["ip", "-n", jump_ns, "link", "add", "lan", "type", "veth", *server_peer],
        ["ip", "addr", "add", f"{host_addr}/30", "dev", host_if],
        ["ip", "-n", jump_ns, "addr", "add", f"{jump_addr}/30", "dev", "wan"],
        ["ip", "-n", jump_ns, "addr", "add", f"{jump_inner}/30", "dev", "lan"],
        ["ip", "-n", server_ns, "addr", "add", f"{server_addr}/30", "dev", "eth0"],
        ["ip", "netns", "exec", jump_ns, "sysctl", "-qw", "net.ipv4.ip_forward=0"],
        ["ip", "-n", jump_ns, "link", "set", "lo", "up"],
        ["ip", "-n", server_ns, "link", "set", "lo", "up"],
        ["ip", "-n", jump_ns, "link", "set", "wan", "up"],
        ["ip", "-n", jump_ns, "link", "set", "lan", "up"],
        ["ip", "-n", server_ns, "link", "set", "eth0", "up"],
        ["ip", "link", "set", host_if, "up"],
    ]
    try:
        for argv in steps:
            must(argv, "building the topology")
    except BaseException:
        teardown_topology(topology)
        raise
    return topology


def teardown_topology(topology: Topology) -> None:
    """Remove the namespaces, their processes and links. Idempotent."""
    teardown_prefix(topology.prefix)


def teardown_prefix(prefix: str) -> None:
    """Remove whatever :func:`build_topology` made for ``prefix`` (a crashed run's too)."""
    _check_prefix(prefix)
    require_root("removing network namespaces")
    jump_ns, server_ns, host_if = _names(prefix)
    namespaces = [ns for ns in (jump_ns, server_ns) if (Path("/run/netns") / ns).exists()]
    pids: list[int] = []
    for ns in namespaces:
        out = run(["ip", "netns", "pids", ns], timeout=10).stdout
        pids.extend(int(p) for p in out.split() if p.isdigit())
    if pids:
        terminate(pids)
    for ns in namespaces:
        run(["ip", "netns", "delete", ns], timeout=30)
    if Path("/sys/class/net", host_if).exists():
        run(["ip", "link", "delete", host_if], timeout=30)
    # Namespaces are dismantled asynchronously; wait so a rebuild can reuse the names.
    deadline = time.monotonic() + 10
    while Path("/sys/class/net", host_if).exists():
        if time.monotonic() > deadline:
            raise TetherError(f"interface {host_if} is still there 10 s after teardown")
        time.sleep(POLL)
