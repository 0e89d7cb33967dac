"""Forward latency over an emulated 20 ms round trip: tether vs plain ssh -L vs direct.

These machines have no netem, so the link is a user-space relay in ssh's ProxyCommand
(:mod:`benchmarks.delay_link`): every chunk waits 10 ms in each direction, in order.
tether's forward and a plain ``ssh -N -L`` both go through it (each ssh runs its own
relay); the direct socket is the same Jupyter server's Unix socket, with no link at
all. Besides the usual ratios (tether / ssh -L), tether's kernel exec p50 is set
beside "RTT + 2x direct": the goal is at most one round trip more than twice the
server's own time.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from benchmarks import manual
from benchmarks.bench import BENCH_USER, Bench
from benchmarks.probes import Endpoint, kernel_latencies, rest_latencies, wait_answering
from benchmarks.registry import Figure, NotMeasured, Outcome, scenario
from benchmarks.scenarios.warm_up import endpoint_of, up
from benchmarks.sizes import Sizes
from benchmarks.stats import percentile
from testing.sshd import host_entry

ONE_WAY_MS = 10.0
RTT_MS = 2 * ONE_WAY_MS
HOST = "tb-rtt"
DELAY_LINK = Path(__file__).resolve().parent.parent / "delay_link.py"
TETHER, PLAIN, DIRECT = "tether", "ssh -L", "direct socket"
PATHS = (PLAIN, TETHER, DIRECT)


def delayed_proxy_command(one_way_ms: float) -> str:
    """A ProxyCommand that reaches ``%h:%p`` through the delaying relay."""
    return f"{sys.executable} {DELAY_LINK} {one_way_ms:g} %h %p"


def path_figures(path: str, label: str) -> dict[str, Figure]:
    """kernel exec p50/p99 and REST p50 of ``path``; tether's are compared with ssh -L."""
    name = f"{path} ({label})" if path != DIRECT else DIRECT
    versus = f"{PLAIN} ({label})" if path == TETHER else None

    def v(what: str) -> str | None:
        return f"{versus}: {what}" if versus else None

    return {
        "kern50": Figure(f"{name}: kernel exec p50", "ms", versus=v("kernel exec p50")),
        "kern99": Figure(f"{name}: kernel exec p99", "ms", versus=v("kernel exec p99")),
        "rest50": Figure(f"{name}: REST p50", "ms", versus=v("REST p50")),
    }


def rotated(turn: list[int]) -> tuple[str, ...]:
    """The paths in this repetition's order: each repetition starts with another one."""
    k = turn[0] % len(PATHS)
    turn[0] += 1
    return PATHS[k:] + PATHS[:k]


def measure(
    out: Outcome, endpoints: dict[str, Endpoint], order: tuple[str, ...], label: str, sizes: Sizes
) -> dict[str, list[float]]:
    """Kernel executions and REST calls on every path; the kernel round trips (s) by path."""
    kernels: dict[str, list[float]] = {}
    out.raw["order"] = list(order)
    for path in order:
        figs = path_figures(path, label)
        rest = rest_latencies(endpoints[path], sizes.rest_calls)
        kern = kernel_latencies(endpoints[path], sizes.kernel_execs)
        out.add(figs["rest50"], percentile(rest, 50) * 1000)
        out.add(figs["kern50"], percentile(kern, 50) * 1000)
        out.add(figs["kern99"], percentile(kern, 99) * 1000)
        out.raw[path] = {"rest_s": rest, "kernel_s": kern}
        kernels[path] = kern
    return kernels


def endpoints_through(
    bench: Bench, stack: contextlib.ExitStack, host: str
) -> tuple[dict[str, Endpoint], dict[str, Any]]:
    """`tether up host` and a plain ``ssh -L`` to the same server socket, both through
    ``host``'s ssh config; and the socket itself."""
    _, info = up(bench, host)
    stack.callback(bench.tether, "down", host, timeout=60)
    tether = endpoint_of(info)
    sock = str(info.get("remote") or "")
    if info.get("transport") != "socket" or not sock.startswith("/"):
        raise NotMeasured(f"tether chose transport {info.get('transport')} ({sock}), not a socket")
    proc, port = manual.tunnel(bench, host, sock)
    stack.callback(manual.stop, proc)
    plain = Endpoint(token=tether.token, port=port)
    if wait_answering(plain, seconds=30) is None:
        raise NotMeasured(f"a plain ssh -L to the server's socket through {host} did not answer")
    return {TETHER: tether, PLAIN: plain, DIRECT: Endpoint(tether.token, sock=sock)}, info


def _delayed(bench: Bench, stack: contextlib.ExitStack) -> dict[str, Endpoint]:
    option = ("ProxyCommand", delayed_proxy_command(ONE_WAY_MS))
    bench.add_hosts(host_entry(bench.server, HOST, user=BENCH_USER, options=[option]))
    bench.profile(HOST, env=str(bench.env))
    endpoints, _ = endpoints_through(bench, stack, HOST)
    return endpoints


@scenario(
    "forward_rtt",
    f"forward latency over an emulated {RTT_MS:g} ms round trip: tether vs ssh -L vs direct",
)
def forward_rtt(bench: Bench, sizes: Sizes) -> Outcome:
    out = Outcome()
    endpoints = bench.resource("endpoints", lambda stack: _delayed(bench, stack))
    turn: list[int] = bench.resource("turn", lambda stack: [0])
    label = f"{RTT_MS:g} ms RTT"
    kernels = measure(out, endpoints, rotated(turn), label, sizes)
    budget = Figure(f"RTT + 2x direct: kernel exec p50 ({label})", "ms")
    out.add(budget, RTT_MS + 2 * percentile(kernels[DIRECT], 50) * 1000)
    vs = Figure(f"tether vs RTT + 2x direct: kernel exec p50 ({label})", "ms", versus=budget.name)
    out.add(vs, percentile(kernels[TETHER], 50) * 1000)
    return out
