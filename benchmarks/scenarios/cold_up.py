"""Cold `up` on a bare account (system python3 only) → URL answering.

tether: `tether up HOST` with no environment configured, so it provisions Python and
JupyterLab itself, with an empty workstation cache and an empty home.
Baselines: the manual recipe, scripted (see benchmarks/manual.py); offline, the server
sits behind a jump host in a network namespace without internet, and the wheels come
from `pip download` on the workstation + `scp` + `pip install --no-index`.

Caches warm (both runs are repeated with the caches warm): after each cold
run, the environment is removed and `tether up` provisions it again, with uv and uv's
cache (offline, the wheels too) still on the server and the workstation's cache kept.

Warm, online (a warm `up` with an unchanged spec should add under 0.5 s): with the
provisioned server running, a new process without an ssh master runs `tether up` for
the managed profile (unchanged spec), alternating with `tether up` for a second profile
of the same account whose `env` names that same environment, ready (no provisioning
at all). The difference of the medians is what the managed environment adds.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import manual
from benchmarks.bench import BARE_USER, Bench, reset_home
from benchmarks.probes import wait_answering
from benchmarks.registry import Figure, NotMeasured, Outcome, scenario
from benchmarks.scenarios.warm_up import endpoint_of
from benchmarks.sizes import Sizes
from testing.helpers.users import home_of
from testing.sshd import free_port

JUPYTER = "~/jl/bin/jupyter"
PIP_DOWNLOAD = ("/usr/bin/python3", "-m", "pip", "download", "--quiet", "--no-cache-dir")
INSTALL_ONLINE = "python3 -m venv ~/jl && ~/jl/bin/pip install --quiet jupyterlab"
INSTALL_OFFLINE = (
    "python3 -m venv ~/jl && "
    "~/jl/bin/pip install --quiet --no-index --find-links ~/wheels jupyterlab"
)
WARM_PAIRS = 3  # alternations of the two warm `up`s per repetition
WARM_MANAGED = Figure(
    "tether up, warm: managed env, unchanged spec", "s", versus="tether up, warm: env = ready env"
)
WARM_READY = Figure("tether up, warm: env = ready env", "s")
WARM_EXTRA = Figure("tether up, warm: what the managed env adds", "s")


def _up_answering(
    bench: Bench,
    host: str,
    what: str,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    answer_within: float = 30,
) -> tuple[dict[str, Any], float]:
    """`tether up HOST --json` as a new process, until the URL it printed answers: (its
    JSON, the seconds in all). NotMeasured, saying why, when it does not get there."""
    run = bench.tether("up", host, "--json", "--no-browser", timeout=timeout, env=env)
    if run.rc != 0:
        raise NotMeasured(f"`tether up` {what}: {run.error_line()}")
    info: dict[str, Any] = run.json()
    waited = wait_answering(endpoint_of(info), seconds=answer_within)
    if waited is None:
        raise NotMeasured(f"the URL printed by `tether up` {what} does not answer")
    return info, run.seconds + waited


def _tether_cold(bench: Bench, out: Outcome, host: str, label: str, manual_total: str) -> None:
    """`tether up` on a bare account: total and phases, or why it could not; then the
    same provisioning again with every cache warm."""
    total = Figure(f"tether up, {label}: total", "s", versus=manual_total)
    reset_home(BARE_USER)
    with tempfile.TemporaryDirectory(prefix="tbc-") as cache:  # a workstation's first time
        env = {"JUPYTER_TETHER_CACHE_DIR": cache}
        try:
            try:
                info, seconds = _up_answering(bench, host, "on a bare account", env=env)
            except NotMeasured as exc:
                out.skip(total, str(exc))
                return
            out.add(total, seconds)
            timings = info.get("timings") or {}
            for phase, took in timings.items():
                out.add(Figure(f"tether up, {label}: {phase}", "s"), float(took))
            if label == "online":
                _warm(bench, out, host)
            copied = info.get("bytes_copied")
            # offline: uv and the wheels; online: uv alone (the server fetches the rest)
            versus = "manual, offline: copied" if label == "offline" else None
            fig = Figure(f"tether up, {label}: copied", "MB", versus=versus)
            if isinstance(copied, int | float):
                out.add(fig, copied / 1e6)
            else:
                out.skip(fig, "`tether up --json` reports no byte count")
            _caches_warm(bench, out, host, label, manual_total, env)
        finally:
            bench.tether("down", host, timeout=120)
            reset_home(BARE_USER)


def _caches_warm(
    bench: Bench, out: Outcome, host: str, label: str, manual_total: str, env: dict[str, str]
) -> None:
    """Provisioning again with the caches warm: the environment is removed,
    while uv, uv's cache (and offline, the wheels) stay on the server and the
    workstation keeps its cache."""
    fig = Figure(f"tether up, {label}, caches warm: total", "s", versus=manual_total)
    bench.tether("down", host, timeout=120)
    shutil.rmtree(home_of(BARE_USER) / ".local/share/jupyter-tether/envs", ignore_errors=True)
    try:
        info, seconds = _up_answering(bench, host, "with warm caches", env=env)
    except NotMeasured as exc:
        out.skip(fig, str(exc))
        return
    out.add(fig, seconds)
    build = (info.get("timings") or {}).get("build")
    if build is not None:
        out.add(Figure(f"tether up, {label}, caches warm: build", "s"), float(build))


def _warm_up_seconds(bench: Bench, host: str) -> float:
    """A new `tether up` process, no ssh master, the server running: until it answers."""
    bench.end_masters()
    info, seconds = _up_answering(bench, host, f"warm, {host}", timeout=120, answer_within=15)
    if not info.get("reused"):
        raise NotMeasured(f"warm `tether up {host}` started a new server")
    return seconds


def _warm(bench: Bench, out: Outcome, host: str) -> None:
    """The managed profile's warm `up` beside the same environment given as `env`."""
    described = bench.tether("env", host, "--json", timeout=60)
    try:
        env = str(described.json()["env"])
    except (ValueError, KeyError):
        for fig in (WARM_MANAGED, WARM_READY, WARM_EXTRA):
            out.skip(fig, f"`tether env {host} --json`: {described.error_line()}")
        return
    ready = f"{host}-ready"
    bench.profile(ready, ssh=host, env=env)
    try:
        first = bench.tether("up", ready, "--json", "--no-browser", timeout=120)
        if first.rc != 0:
            raise NotMeasured(f"`tether up` with env = {env}: {first.error_line()}")
        managed: list[float] = []
        plain: list[float] = []
        for _ in range(WARM_PAIRS):
            managed.append(_warm_up_seconds(bench, host))
            plain.append(_warm_up_seconds(bench, ready))
    except NotMeasured as exc:
        for fig in (WARM_MANAGED, WARM_READY, WARM_EXTRA):
            out.skip(fig, str(exc))
        return
    finally:
        bench.tether("down", ready, timeout=120)
    m, r = statistics.median(managed), statistics.median(plain)
    out.add(WARM_MANAGED, m)
    out.add(WARM_READY, r)
    # A difference below zero is noise: what the managed env adds is then nothing.
    out.add(WARM_EXTRA, max(0.0, m - r))
    out.raw["warm up seconds"] = {"managed": managed, "env = ready env": plain, "extra": m - r}


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
