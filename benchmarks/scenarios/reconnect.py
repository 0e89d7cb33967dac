"""Reconnect after a real link cut: workstation -- jump host link down for N seconds.

The Jupyter server runs on the jump host (in its network namespace); the link in
front of it is taken down with ``ip link set ... down`` and brought back. Figures:

* detect: from the cut until the tunnel's ssh process gives up on the dead link
  (a run where it never noticed during the cut is counted as such);
* restore: from the link coming back until an authenticated request through the same
  local port succeeds again.

Baselines: autossh with its default settings (Debian's wrapper picks a monitoring
port; poll 600 s) and tuned (``-M 0``, ServerAliveInterval 2, ServerAliveCountMax 2).
Both run with ``AUTOSSH_GATETIME=0``: otherwise autossh gives up for good when ssh
fails within 30 s of its first start, which a cut soon after starting would cause.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks import manual
from benchmarks.bench import Bench, Remote
from benchmarks.probes import Endpoint, wait_answering
from benchmarks.registry import Figure, NotMeasured, Outcome, scenario
from benchmarks.scenarios.scale import NO_SUPERVISOR, supervisor_pid
from benchmarks.scenarios.warm_up import endpoint_of, up
from benchmarks.sizes import Sizes
from jupyter_tether import sandbox
from jupyter_tether.sandbox import free_port

VARIANTS: dict[str, tuple[str, ...]] = {
    "autossh default": (),
    "autossh tuned": (
        "-M",
        "0",
        "-o",
        "ServerAliveInterval=2",
        "-o",
        "ServerAliveCountMax=2",
        "-o",
        "ExitOnForwardFailure=yes",
    ),
}


def _server(bench: Bench, stack: contextlib.ExitStack) -> tuple[Remote, dict[str, Any]]:
    remote = bench.remote()
    _, info = up(bench, remote.jump_host)
    stack.callback(bench.tether, "down", remote.jump_host, timeout=60)
    if not str(info.get("remote", "")).startswith("/"):
        raise NotMeasured(f"tether chose transport {info.get('transport')}, not a Unix socket")
    return remote, info


def _ssh_child(pid: int) -> int | None:
    for generation in sandbox._descendants(pid):
        for child in generation:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/comm").read_text().strip() == "ssh":
                    return child
    return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cut_and_watch(
    topo: sandbox.Topology, ep: Endpoint, watched: int, cut: float, restore_wait: float
) -> tuple[float | None, float | None]:
    """Cut the link for ``cut`` s; (detect, restore) seconds, None where it did not happen."""
    detect = None
    topo.cut()
    start = time.monotonic()
    try:
        while time.monotonic() - start < cut:
            if detect is None and not _alive(watched):
                detect = time.monotonic() - start
            time.sleep(0.05)
    finally:
        topo.restore()
    return detect, wait_answering(ep, seconds=restore_wait, every=0.1)


def _autossh(
    bench: Bench,
    remote: Remote,
    info: dict[str, Any],
    extra: tuple[str, ...],
    cut: float,
    restore_wait: float,
) -> tuple[float | None, float | None, str]:
    port = free_port()
    ep = Endpoint(token=endpoint_of(info).token, port=port)
    spec = f"127.0.0.1:{port}:{info['remote']}"
    argv = ["autossh", *extra, "-N", "-F", str(bench.ssh_config)]
    argv += ["-o", "ControlMaster=no", "-o", "ControlPath=none", "-L", spec, remote.jump_host]
    log = bench.workdir / f"autossh-{port}.log"
    env = {**os.environ, "AUTOSSH_GATETIME": "0", "AUTOSSH_LOGFILE": str(log)}
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    try:
        if wait_answering(ep, seconds=30) is None:
            raise NotMeasured(f"autossh's forward did not answer: {' '.join(argv)}")
        child = _ssh_child(proc.pid)
        if child is None:
            raise NotMeasured("autossh runs no ssh")
        detect, restore = cut_and_watch(remote.topology, ep, child, cut, restore_wait)
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        return detect, restore, tail
    finally:
        manual.stop(proc)  # SIGTERM: autossh ends its ssh too


@scenario("reconnect", "reconnect after a real link cut: detect and restore", needs_netns=True)
def reconnect(bench: Bench, sizes: Sizes) -> Outcome:
    out = Outcome()
    remote, info = bench.resource("server", lambda stack: _server(bench, stack))
    for cut in sizes.cuts:
        for variant, extra in VARIANTS.items():
            detect_fig = Figure(f"{variant}, {cut:g} s cut: detect", "s")
            restore_fig = Figure(f"{variant}, {cut:g} s cut: restore", "s")
            detect, restore, log = _autossh(bench, remote, info, extra, cut, sizes.restore_wait)
            if detect is None:
                out.skip(detect_fig, "ssh did not notice the cut while it lasted")
            else:
                out.add(detect_fig, detect)
            if restore is None:
                out.skip(restore_fig, f"not back {sizes.restore_wait:g} s after the link")
            else:
                out.add(restore_fig, restore)
            out.raw[f"{variant}, {cut:g} s cut: autossh log"] = log
        _tether(bench, out, remote, info, cut, sizes.restore_wait)
    return out


def _tether(
    bench: Bench, out: Outcome, remote: Remote, info: dict[str, Any], cut: float, wait: float
) -> None:
    detect_fig = Figure(
        f"tether, {cut:g} s cut: detect", "s", versus=f"autossh tuned, {cut:g} s cut: detect"
    )
    restore_fig = Figure(
        f"tether, {cut:g} s cut: restore", "s", versus=f"autossh tuned, {cut:g} s cut: restore"
    )
    supervisor = supervisor_pid(bench, info)
    if supervisor is None:
        out.skip(detect_fig, NO_SUPERVISOR)
        out.skip(restore_fig, NO_SUPERVISOR)
        return
    # Detection shows as the ssh master going away (the supervisor ends a dead one).
    master = bench.master_pid(remote.jump_host)
    watched = master if master is not None else supervisor
    detect, restore = cut_and_watch(remote.topology, endpoint_of(info), watched, cut, wait)
    if detect is None:
        out.skip(detect_fig, "the ssh master did not end while the link was cut")
    else:
        out.add(detect_fig, detect)
    if restore is None:
        out.skip(restore_fig, f"not back {wait:g} s after the link")
    else:
        out.add(restore_fig, restore)
