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

The ``soak`` scenario cuts the same link many times in a row, for random lengths drawn
from a seeded generator (20 random cuts of 1-30 s with ``--full``), and
reports the worst and the median restore time, for tether and for tuned autossh on the
same cuts.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks import manual
from benchmarks.bench import Bench, Remote
from benchmarks.probes import Endpoint, wait_answering
from benchmarks.registry import Figure, NotMeasured, Outcome, scenario
from benchmarks.scenarios.scale import NO_SUPERVISOR, supervisor_pid
from benchmarks.scenarios.warm_up import endpoint_of, up
from benchmarks.sizes import Sizes
from jupyter_tether.proc import descendants, pid_alive
from testing.netns import Topology
from testing.sshd import free_port

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
    for generation in descendants(pid):
        for child in generation:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/comm").read_text().strip() == "ssh":
                    return child
    return None


def cut_and_watch(
    topo: Topology, ep: Endpoint, watched: int, cut: float, restore_wait: float
) -> tuple[float | None, float | None]:
    """Cut the link for ``cut`` s; (detect, restore) seconds, None where it did not happen."""
    detect = None
    topo.cut()
    start = time.monotonic()
    try:
        while time.monotonic() - start < cut:
            if detect is None and not pid_alive(watched):
                detect = time.monotonic() - start
            time.sleep(0.05)
    finally:
        topo.restore()
    return detect, wait_answering(ep, seconds=restore_wait, every=0.1)


@contextlib.contextmanager
def _autossh_running(
    bench: Bench, remote: Remote, info: dict[str, Any], extra: tuple[str, ...]
) -> Iterator[tuple[Endpoint, int, Path]]:
    """autossh forwarding a free local port to the server: (endpoint, its ssh, its log)."""
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
        yield ep, child, log
    finally:
        manual.stop(proc)  # SIGTERM: autossh ends its ssh too


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def _autossh(
    bench: Bench,
    remote: Remote,
    info: dict[str, Any],
    extra: tuple[str, ...],
    cut: float,
    restore_wait: float,
) -> tuple[float | None, float | None, str]:
    with _autossh_running(bench, remote, info, extra) as (ep, child, log):
        detect, restore = cut_and_watch(remote.topology, ep, child, cut, restore_wait)
        return detect, restore, _log_tail(log)


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


# --------------------------------------------------------------------------- soak

SOAK_SEED = "jupyter-tether soak"  # fixed: every run, and both tools, get the same cuts
SOAK_SETTLE = 1.0  # seconds between a restore and the next cut
# A tool not back this long after the link returned is given up on for the rest of the
# cuts (autossh's restart backoff reaches minutes after a few long outages).
SOAK_GIVE_UP = 60.0


def soak_lengths(sizes: Sizes, repetition: int) -> list[float]:
    """The cut lengths of one repetition: seeded, so reruns cut the same way."""
    rng = random.Random(f"{SOAK_SEED} {repetition}")
    low, high = sizes.soak_range
    return [round(rng.uniform(low, high), 1) for _ in range(sizes.soak_cuts)]


def cuts_in_a_row(
    topo: Topology, ep: Endpoint, lengths: Sequence[float], restore_wait: float
) -> list[float]:
    """Cut the link for each length in turn; after each, the seconds until ``ep`` answers
    again. Stops at the first cut it does not recover from (fewer values than cuts)."""
    restores: list[float] = []
    for length in lengths:
        topo.cut()
        try:
            time.sleep(length)  # the outage itself, not a wait for anything
        finally:
            topo.restore()
        restore = wait_answering(ep, seconds=restore_wait, every=0.1)
        if restore is None:
            break
        restores.append(restore)
        time.sleep(SOAK_SETTLE)
    return restores


def _add_soak(
    out: Outcome, who: str, label: str, lengths: Sequence[float], restores: Sequence[float]
) -> None:
    versus = who != "autossh tuned"
    worst = Figure(
        f"{who}, {label}: worst restore",
        "s",
        versus=f"autossh tuned, {label}: worst restore" if versus else None,
    )
    median = Figure(
        f"{who}, {label}: median restore",
        "s",
        versus=f"autossh tuned, {label}: median restore" if versus else None,
    )
    out.add(Figure(f"{who}, {label}: recovered", "cuts"), float(len(restores)))
    out.raw[f"{who}, {label}: restores"] = list(restores)
    if len(restores) < len(lengths):
        why = f"cut {len(restores) + 1} of {len(lengths)} ({lengths[len(restores)]:g} s) "
        why += f"not recovered {SOAK_GIVE_UP:g} s after the link returned"
        out.skip(worst, why)
        out.skip(median, why)
        return
    out.add(worst, max(restores))
    out.add(median, statistics.median(restores))


@scenario(
    "soak",
    "random link cuts in a row: worst and median restore",
    needs_netns=True,
)
def soak(bench: Bench, sizes: Sizes) -> Outcome:
    out = Outcome()
    remote, info = bench.resource("server", lambda stack: _server(bench, stack))
    repetition = next(bench.resource("soak repetition", lambda stack: itertools.count()))
    lengths = soak_lengths(sizes, repetition)
    low, high = sizes.soak_range
    label = f"{len(lengths)} cuts of {low:g}-{high:g} s"
    out.raw["cut lengths"] = lengths
    topo = remote.topology
    wait = min(sizes.restore_wait, SOAK_GIVE_UP)
    if supervisor_pid(bench, info) is None:
        out.skip(Figure(f"tether, {label}: worst restore", "s"), NO_SUPERVISOR)
    else:
        restores = cuts_in_a_row(topo, endpoint_of(info), lengths, wait)
        _add_soak(out, "tether", label, lengths, restores)
    tuned = VARIANTS["autossh tuned"]
    with _autossh_running(bench, remote, info, tuned) as (ep, _child, log):
        restores = cuts_in_a_row(topo, ep, lengths, wait)
        out.raw[f"autossh tuned, {label}: autossh log"] = _log_tail(log)
    _add_soak(out, "autossh tuned", label, lengths, restores)
    return out
