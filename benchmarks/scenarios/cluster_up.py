"""`up` on a Slurm cluster: idle compute nodes, nothing running → the URL answering.

The cluster is the test suite's lab (``testing/cluster.py``): a login node and two
compute nodes with a real slurmctld, slurmd and munge, in namespaces.

tether: `tether up HPC` (a profile with ``scheduler = "slurm"``) until the URL answers:
it submits the job, waits for it, builds the bridge into it and forwards.
Baseline, the centres' scripted recipe: ``sbatch`` of a script that starts Jupyter on
the node's address, ``squeue`` polled for the node, the token read from the job's
output, then ``ssh -N -L PORT:NODE:PORT`` through the login node.

Also: how long after the job turns RUNNING (seen by polling ``squeue`` from the side)
the URL answers, for both.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import threading
import time

from benchmarks import manual
from benchmarks.bench import BENCH_USER, Bench
from benchmarks.probes import Endpoint, wait_answering
from benchmarks.registry import Figure, NotMeasured, Outcome, scenario
from benchmarks.scenarios.warm_up import endpoint_of, up
from benchmarks.sizes import Sizes
from testing.cluster import Cluster

RECIPE = Figure("scripted sbatch + squeue + ssh -L", "s")
TETHER = Figure("tether up (batch job)", "s", versus=RECIPE.name)
RECIPE_AFTER = Figure("recipe: RUNNING → answering", "s")
TETHER_AFTER = Figure("tether: RUNNING → answering", "s", versus=RECIPE_AFTER.name)

HPC = "tb-hpc"
OUTPUT = "tether-bench-recipe.out"


def _cluster(bench: Bench, stack: contextlib.ExitStack) -> Cluster:
    key = bench.workdir / "ssh" / "id_ed25519"
    lab = Cluster(users=[BENCH_USER], client_key=key)
    lab.start()
    stack.callback(lab.stop)
    bench.add_hosts(*lab.host_entries())
    bench.profile(HPC, ssh=lab.alias(BENCH_USER), env=str(bench.env), scheduler="slurm")
    return lab


class RunningWatch:
    """Polls the queue from the side and notes when a job of the user turns RUNNING."""

    def __init__(self, lab: Cluster) -> None:
        self.lab = lab
        self.at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        deadline = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < deadline:
            jobs = [j for j in self.lab.squeue() if j.user == BENCH_USER]
            if any(j.state == "RUNNING" for j in jobs):
                self.at = time.monotonic()
                return
            time.sleep(0.05)

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.at


def _recipe(bench: Bench, lab: Cluster) -> tuple[float, float | None]:
    """The scripted recipe; (seconds to an answering URL, seconds after RUNNING)."""
    host = lab.alias(BENCH_USER)
    script = (
        "#!/bin/bash\n"
        f"#SBATCH --output={OUTPUT}\n"
        'ip=$(hostname -I | awk "{print \\$1}")\n'
        f"exec {bench.env}/bin/jupyter lab --no-browser --ip=$ip --port=0\n"
    )
    watch = RunningWatch(lab)
    start = time.monotonic()
    job = ""
    proc = None
    try:
        manual.remote(bench, host, f"rm -f {OUTPUT}")
        res = bench.ssh(host, f"printf %s {shlex.quote(script)} | sbatch --parsable")
        job = res.stdout.strip().split(";")[0]
        if res.returncode != 0 or not job.isdigit():
            raise NotMeasured(f"sbatch: {res.stderr.strip()}")
        url = None
        deadline = time.monotonic() + 300
        while url is None and time.monotonic() < deadline:
            out = bench.ssh(host, f"squeue -h -j {job} -o %T; cat {OUTPUT} 2>/dev/null").stdout
            m = re.search(r"http://([^:/\s]+):(\d+)/lab\?token=([0-9a-f]+)", out)
            if m:
                url = m
            else:
                time.sleep(0.2)
        if url is None:
            raise NotMeasured("the recipe's job never printed its URL")
        node, port, token = url.group(1), url.group(2), url.group(3)
        proc, local = manual.tunnel(bench, host, f"{node}:{port}")
        waited = wait_answering(Endpoint(token=token, port=local), seconds=60)
        if waited is None:
            raise NotMeasured("the recipe's tunnel never answered")
        done = time.monotonic()
        running = watch.stop()
        return done - start, (done - running) if running else None
    finally:
        watch.stop()
        if proc is not None:
            manual.stop(proc)
        if job:
            bench.ssh(host, f"scancel {job}")


@scenario(
    "cluster_up",
    "`up` on a Slurm cluster: idle nodes → URL answering, beside the scripted sbatch recipe",
    needs_netns=True,
)
def cluster_up(bench: Bench, sizes: Sizes) -> Outcome:
    out = Outcome()
    lab = bench.resource("cluster", lambda stack: _cluster(bench, stack))
    lab.reset()
    seconds, after = _recipe(bench, lab)
    out.add(RECIPE, seconds)
    if after is None:
        out.skip(RECIPE_AFTER, "the job was never seen RUNNING")
    else:
        out.add(RECIPE_AFTER, after)
    lab.reset()

    bench.end_masters()
    watch = RunningWatch(lab)
    try:
        run, info = up(bench, HPC, timeout=300)
        waited = wait_answering(endpoint_of(info), seconds=15)
        if waited is None:
            raise NotMeasured("the URL tether printed does not answer")
        done = time.monotonic()
        running = watch.stop()
    finally:
        watch.stop()
        bench.tether("down", HPC, timeout=60)
    out.add(TETHER, run.seconds + waited)
    if running is None:
        out.skip(TETHER_AFTER, "the job was never seen RUNNING")
    else:
        out.add(TETHER_AFTER, done - running)
    out.raw["tether timings"] = info.get("timings")
    return out
