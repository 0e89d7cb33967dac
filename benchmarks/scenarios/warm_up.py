"""Warm `up`: the server already runs; a new shell without an ssh master asks for it.

tether: `tether up HOST` (reuses the running server) until the URL answers.
Baselines: the manual reconnect, scripted (`jupyter server list` over ssh for the
token, then `ssh -N -L`); jupyter-forward from PyPI when it can run here.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

from benchmarks import manual, peers
from benchmarks.bench import Bench, TetherRun
from benchmarks.probes import Endpoint, wait_answering
from benchmarks.registry import Figure, NotMeasured, Outcome, scenario
from benchmarks.sizes import Sizes
from testing.sshd import free_port

MANUAL = Figure("manual: server list + ssh -L", "s")
TETHER = Figure("tether up", "s", versus=MANUAL.name)
JUPYTER_FORWARD = Figure("jupyter-forward", "s", versus=MANUAL.name)


def endpoint_of(info: dict[str, Any]) -> Endpoint:
    token = parse_qs(urlparse(str(info["url"])).query)["token"][0]
    return Endpoint(token=token, port=int(info["local_port"]))


def up(bench: Bench, host: str, *, timeout: float = 300) -> tuple[TetherRun, dict[str, Any]]:
    run = bench.tether("up", host, "--json", "--no-browser", timeout=timeout)
    if run.rc != 0:
        raise NotMeasured(f"tether up {host}: {run.error_line()}")
    return run, run.json()


def running_server(bench: Bench, stack: contextlib.ExitStack) -> dict[str, Any]:
    """`tether up` on the main account, downed when the scenario ends."""
    _, info = up(bench, bench.main_host)
    stack.callback(bench.tether, "down", bench.main_host, timeout=60)
    return info


def _manual_server(bench: Bench, stack: contextlib.ExitStack) -> int:
    port = free_port()
    jupyter = f"{bench.env}/bin/jupyter"
    manual.start_in_tmux(bench, bench.main_host, jupyter, port, session="manual")
    stack.callback(bench.ssh, bench.main_host, "tmux kill-session -t manual")
    manual.read_token(bench, bench.main_host, jupyter, port, seconds=60)  # it is up
    return port


@scenario("warm_up", "warm `up`: server running, new shell, no ssh master → URL answering")
def warm_up(bench: Bench, sizes: Sizes) -> Outcome:
    out = Outcome()
    bench.resource("server", lambda stack: running_server(bench, stack))
    port = bench.resource("manual", lambda stack: _manual_server(bench, stack))

    bench.end_masters()
    run, info = up(bench, bench.main_host)
    if not info.get("reused"):
        raise NotMeasured("tether up started a new server instead of reusing the running one")
    waited = wait_answering(endpoint_of(info), seconds=15)
    if waited is None:
        raise NotMeasured("the URL tether printed does not answer")
    out.add(TETHER, run.seconds + waited)
    out.raw["tether timings"] = info.get("timings")

    start = time.monotonic()
    proc, _ = manual.connect(bench, bench.main_host, f"{bench.env}/bin/jupyter", port)
    out.add(MANUAL, time.monotonic() - start)
    manual.stop(proc)

    # jupyter-forward starts a server of its own each time (it has no reuse). When it
    # cannot run here, it is tried once and every repetition reports the same reason.
    failed: list[str] = bench.resource("jupyter-forward", lambda stack: [])
    found = failed[0] if failed else peers.jupyter_forward(bench)
    if isinstance(found, str):
        failed[:] = [found]
        out.skip(JUPYTER_FORWARD, found)
    else:
        out.add(JUPYTER_FORWARD, found)
    return out
