"""Forward latency through a jump host: tether vs plain ssh -L vs direct socket.

The Jupyter server runs on the server behind the jump host (network namespaces,
testing/netns.py), reached as a usual ssh config does: ``ProxyCommand ssh -W %h:%p
JUMP``. The server's socket is on this machine's filesystem (namespaces share it), so
the direct socket is still the physical limit. tether's kernel exec p50 is set beside
the direct socket's (goal <= 1.5x) and beside plain ssh -L's.

Nagle stalls (README, "Jump hosts and Nagle"): before OpenSSH 10.1 neither end of the
workstation ``ssh -W`` -- jump sshd hop sets TCP_NODELAY. The OpenSSH versions on each
hop are read (``ssh -V`` here, the sshd banners) and the verdict of
:mod:`jupyter_tether.nagle` is a row of its own, so a slow figure says which hop and
which versions it comes from.
"""

from __future__ import annotations

import contextlib

from benchmarks.bench import BENCH_USER, Bench
from benchmarks.probes import Endpoint
from benchmarks.registry import Figure, Outcome, scenario
from benchmarks.scenarios.forward_rtt import (
    DIRECT,
    TETHER,
    endpoints_through,
    measure,
    rotated,
)
from benchmarks.sizes import Sizes
from benchmarks.stats import percentile
from jupyter_tether import nagle
from testing.sshd import host_entry, start_sshd, stop_sshd

HOST = "tb-far-w"
SERVER_PORT = 2222  # port 22 in the server's namespace is the bare account's sshd
LABEL = "jump, ssh -W"


def _behind_jump(bench: Bench, stack: contextlib.ExitStack) -> tuple[dict[str, Endpoint], str]:
    remote = bench.remote()
    topo = remote.topology
    server = start_sshd(
        bench.workdir / "sshd-far-bench",
        users=[BENCH_USER],
        listen=topo.server_address,
        port=SERVER_PORT,
        netns=topo.server_ns,
        client_key=bench.server.client_key,
    )
    stack.callback(stop_sshd, server)
    proxy = f"ssh -F {bench.ssh_config} -W %h:%p {remote.jump_host}"
    bench.add_hosts(host_entry(server, HOST, user=BENCH_USER, options=[("ProxyCommand", proxy)]))
    bench.profile(HOST, env=str(bench.env))
    endpoints, _ = endpoints_through(bench, stack, HOST)
    jump = bench.entries[remote.jump_host]
    versions = nagle.Versions(
        local=nagle.local_version(),
        jump=nagle.banner_version(jump.hostname, jump.port),
    )
    return endpoints, nagle.summary(versions)


@scenario(
    "forward_jump", "forward latency through a jump host (ProxyCommand ssh -W)", needs_netns=True
)
def forward_jump(bench: Bench, sizes: Sizes) -> Outcome:
    out = Outcome()
    endpoints, verdict = bench.resource("endpoints", lambda stack: _behind_jump(bench, stack))
    turn: list[int] = bench.resource("turn", lambda stack: [0])
    kernels = measure(out, endpoints, rotated(turn), LABEL, sizes)
    direct = Figure(f"{DIRECT}: kernel exec p50", "ms")
    vs = Figure(f"tether vs direct ({LABEL}): kernel exec p50", "ms", versus=direct.name)
    out.add(vs, percentile(kernels[TETHER], 50) * 1000)
    # Not a measurement: which hops can avoid Nagle stalls with these versions.
    out.skip(Figure("Nagle per hop (OpenSSH versions read in this run)", "-"), verdict)
    out.raw["nagle"] = verdict
    return out
