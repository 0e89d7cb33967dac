"""Forward throughput and latency, on three paths to the same Jupyter Unix socket:

* tether: the forward `tether up` set up (through its ssh ControlMaster);
* ssh -L: a plain ``ssh -N -L 127.0.0.1:PORT:/path/jupyter.sock`` of its own;
* direct: this process connecting to the socket itself (the sandbox server is this
  machine), the physical limit with no ssh at all.

tether's kernel round trip is also set beside the direct socket's (the goal is
<= 1.5x at p50, <= 2x at p99), and the supervisor's memory, which carries tether's
relay (relay.py), is read after its download.

The download goes through ``/files/`` (what Lab's Download uses; the contents API
would base64-encode the bytes in the server, which measures Jupyter, not the forward).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from benchmarks import manual
from benchmarks.bench import BENCH_USER, Bench, write_as
from benchmarks.probes import Endpoint, download, kernel_latencies, rest_latencies, wait_answering
from benchmarks.registry import Figure, NotMeasured, Outcome, scenario
from benchmarks.scenarios.scale import rss_mb, supervisor_pid
from benchmarks.scenarios.warm_up import endpoint_of, running_server
from benchmarks.sizes import Sizes
from benchmarks.stats import percentile
from testing.helpers.users import home_of

PATHS = ("ssh -L", "tether", "direct socket")
DIRECT = "direct socket"
VS_DIRECT = {
    "kern50": Figure(
        "tether vs direct: kernel exec p50", "ms", versus=f"{DIRECT}: kernel exec p50"
    ),
    "kern99": Figure(
        "tether vs direct: kernel exec p99", "ms", versus=f"{DIRECT}: kernel exec p99"
    ),
}
SUPERVISOR_RSS = Figure("tether: supervisor RSS after the download", "MB", absolute=True)


def figures(path: str) -> dict[str, Figure]:
    versus = None if path == "ssh -L" else "ssh -L"
    return {
        "mbps": Figure(f"{path}: download", "MB/s", better="higher", versus=_v(versus, "download")),
        "rest50": Figure(f"{path}: REST p50", "ms", versus=_v(versus, "REST p50")),
        "rest99": Figure(f"{path}: REST p99", "ms", versus=_v(versus, "REST p99")),
        "kern50": Figure(f"{path}: kernel exec p50", "ms", versus=_v(versus, "kernel exec p50")),
        "kern99": Figure(f"{path}: kernel exec p99", "ms", versus=_v(versus, "kernel exec p99")),
    }


def _v(path: str | None, what: str) -> str | None:
    return f"{path}: {what}" if path else None


def _endpoints(
    bench: Bench, stack: contextlib.ExitStack
) -> tuple[dict[str, Endpoint], dict[str, Any]]:
    info = running_server(bench, stack)
    tether = endpoint_of(info)
    sock = str(info.get("remote") or "")
    if info.get("transport") != "socket" or not sock.startswith("/"):
        raise NotMeasured(f"tether chose transport {info.get('transport')} ({sock}), not a socket")
    proc, port = manual.tunnel(bench, bench.main_host, sock)
    stack.callback(manual.stop, proc)
    plain = Endpoint(token=tether.token, port=port)
    if wait_answering(plain, seconds=30) is None:
        raise NotMeasured("a plain ssh -L to the server's socket did not answer")
    endpoints = {"tether": tether, "ssh -L": plain, DIRECT: Endpoint(tether.token, sock=sock)}
    return endpoints, info


def _payload(bench: Bench, stack: contextlib.ExitStack, megabytes: int) -> tuple[str, int]:
    name = f"tether-bench-{megabytes}MB.bin"
    path = home_of(BENCH_USER) / name
    size = megabytes << 20
    write_as(BENCH_USER, path, os.urandom(size))
    stack.callback(Path.unlink, path, missing_ok=True)
    return f"/files/{name}", size


@scenario("forward", "forward throughput and latency: tether vs plain ssh -L vs direct socket")
def forward(bench: Bench, sizes: Sizes) -> Outcome:
    out = Outcome()
    endpoints, info = bench.resource("endpoints", lambda stack: _endpoints(bench, stack))
    url, size = bench.resource("payload", lambda stack: _payload(bench, stack, sizes.download_mb))
    # Each repetition starts with another path, so that no path always runs first
    # (warm caches, a neighbour's burst of load).
    turn: list[int] = bench.resource("turn", lambda stack: [0])
    order = PATHS[turn[0] % len(PATHS) :] + PATHS[: turn[0] % len(PATHS)]
    turn[0] += 1
    out.raw["order"] = list(order)
    for path in order:
        ep = endpoints[path]
        figs = figures(path)
        seconds = download(ep, url, expect=size)
        out.add(figs["mbps"], size / (1 << 20) / seconds)
        rest = rest_latencies(ep, sizes.rest_calls)
        out.add(figs["rest50"], percentile(rest, 50) * 1000)
        out.add(figs["rest99"], percentile(rest, 99) * 1000)
        kern = kernel_latencies(ep, sizes.kernel_execs)
        out.add(figs["kern50"], percentile(kern, 50) * 1000)
        out.add(figs["kern99"], percentile(kern, 99) * 1000)
        if path == "tether":
            out.add(VS_DIRECT["kern50"], percentile(kern, 50) * 1000)
            out.add(VS_DIRECT["kern99"], percentile(kern, 99) * 1000)
            pid = supervisor_pid(bench, info)
            if pid is None:
                out.skip(SUPERVISOR_RSS, "no tunnel supervisor found")
            else:
                out.add(SUPERVISOR_RSS, rss_mb(pid))
        out.raw[path] = {"download_s": seconds, "rest_s": rest, "kernel_s": kern}
    return out
