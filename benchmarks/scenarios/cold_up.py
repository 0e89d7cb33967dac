"""Cold `up` on a bare account (system python3 only) → URL answering.

tether: `tether up HOST` with no environment configured, so it must provision Python
and JupyterLab itself (issue 3). Until it can, the run records why not.
Baselines: the manual recipe, scripted (see benchmarks/manual.py); offline, the server
sits behind a jump host in a network namespace without internet, and the wheels come
from `pip download` on the workstation + `scp` + `pip install --no-index`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks import manual
from benchmarks.bench import BARE_USER, Bench, reset_home
from benchmarks.probes import wait_answering
from benchmarks.registry import Figure, Outcome, scenario
from benchmarks.scenarios.warm_up import endpoint_of
from benchmarks.sizes import Sizes
from jupyter_tether.sandbox import free_port

JUPYTER = "~/jl/bin/jupyter"
PIP_DOWNLOAD = ("/usr/bin/python3", "-m", "pip", "download", "--quiet", "--no-cache-dir")
INSTALL_ONLINE = "python3 -m venv ~/jl && ~/jl/bin/pip install --quiet jupyterlab"
INSTALL_OFFLINE = (
    "python3 -m venv ~/jl && "
    "~/jl/bin/pip install --quiet --no-index --find-links ~/wheels jupyterlab"
)


def _tether_cold(bench: Bench, out: Outcome, host: str, label: str, manual_total: str) -> None:
    """`tether up` on a bare account: total and phases, or why it could not."""
    total = Figure(f"tether up, {label}: total", "s", versus=manual_total)
    reset_home(BARE_USER)
    with tempfile.TemporaryDirectory(prefix="tbc-") as cache:  # a workstation's first time
        run = bench.tether(
            "up",
            host,
            "--json",
            "--no-browser",
            timeout=900,
            env={"JUPYTER_TETHER_CACHE_DIR": cache},
        )
    if run.rc != 0:
        out.skip(total, f"`tether up` on a bare account: {run.error_line()}")
        return
    try:
        info = run.json()
        waited = wait_answering(endpoint_of(info), seconds=30)
        if waited is None:
            out.skip(total, "the URL tether printed does not answer")
            return
        out.add(total, run.seconds + waited)
        timings = info.get("timings") or {}
        for phase, seconds in timings.items():
            out.add(Figure(f"tether up, {label}: {phase}", "s"), float(seconds))
        copied = info.get("bytes_copied") or (info.get("provision") or {}).get("bytes_copied")
        if label == "offline":
            fig = Figure("tether up, offline: copied", "MB", versus="manual, offline: copied")
            if isinstance(copied, int | float):
                out.add(fig, copied / 1e6)
            else:
                out.skip(fig, "`tether up --json` reports no byte count")
    finally:
        bench.tether("down", host, timeout=120)
        reset_home(BARE_USER)


def _manual_online(bench: Bench, out: Outcome) -> None:
    reset_home(BARE_USER)
    host = bench.bare_host
    port = free_port()
    try:
        start = time.monotonic()
        manual.remote(bench, host, INSTALL_ONLINE, timeout=900)
        installed = time.monotonic()
        manual.start_in_tmux(bench, host, JUPYTER, port, session="jl")
        proc, _ = manual.connect(bench, host, JUPYTER, port)
        done = time.monotonic()
        manual.stop(proc)
    finally:
        reset_home(BARE_USER)
    out.add(Figure("manual, online: total", "s"), done - start)
    out.add(Figure("manual, online: venv + pip install", "s"), installed - start)
    out.add(Figure("manual, online: tmux + token + ssh -L", "s"), done - installed)


def _manual_offline(bench: Bench, out: Outcome) -> None:
    host = bench.remote().far_bare_host
    reset_home(BARE_USER)
    try:
        with tempfile.TemporaryDirectory(prefix="tbw-") as tmp:
            wheels = Path(tmp) / "wheels"
            start = time.monotonic()
            manual.local(
                [*PIP_DOWNLOAD, "--dest", str(wheels), "jupyterlab"],
                timeout=900,
            )
            downloaded = time.monotonic()
            copied = sum(f.stat().st_size for f in wheels.iterdir())
            manual.local(
                ["scp", "-q", "-r", "-F", str(bench.ssh_config), str(wheels), f"{host}:wheels"],
                timeout=600,
            )
            sent = time.monotonic()
        manual.remote(bench, host, INSTALL_OFFLINE, timeout=900)
        installed = time.monotonic()
        manual.start_in_tmux(bench, host, JUPYTER, 8888, session="jl")
        proc, _ = manual.connect(bench, host, JUPYTER, 8888)
        done = time.monotonic()
        manual.stop(proc)
    finally:
        reset_home(BARE_USER)
    out.add(Figure("manual, offline: total", "s"), done - start)
    out.add(Figure("manual, offline: pip download (workstation)", "s"), downloaded - start)
    out.add(Figure("manual, offline: scp", "s"), sent - downloaded)
    out.add(Figure("manual, offline: venv + pip install --no-index", "s"), installed - sent)
    out.add(Figure("manual, offline: tmux + token + ssh -L", "s"), done - installed)
    out.add(Figure("manual, offline: copied", "MB"), copied / 1e6)


@scenario("cold_up", "cold `up` on a bare account → URL answering, online and offline")
def cold_up(bench: Bench, sizes: Sizes) -> Outcome:
    out = Outcome()
    _manual_online(bench, out)
    _tether_cold(bench, out, bench.bare_host, "online", "manual, online: total")
    _manual_offline(bench, out)
    _tether_cold(bench, out, bench.remote().far_bare_host, "offline", "manual, offline: total")
    return out
