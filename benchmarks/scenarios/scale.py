"""Scale: K accounts run `tether up` at once; memory of what stays running.

Absolute figures, machine-dependent: there is no baseline to divide by.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.bench import Bench, scale_host
from benchmarks.registry import Figure, NotMeasured, Outcome, scenario
from benchmarks.sizes import Sizes
from jupyter_tether.proc import descendants

SERVER_RSS = Figure("RSS per idle Jupyter server", "MB", absolute=True)
MASTER_RSS = Figure("RSS per ssh master (workstation)", "MB", absolute=True)
NO_SUPERVISOR = "this tether starts no tunnel supervisor"
SUPERVISOR_RSS = Figure("RSS per tunnel supervisor (workstation)", "MB", absolute=True)


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants, in MB."""
    pids = [pid, *(p for gen in descendants(pid) for p in gen)]
    total = 0
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def supervisor_pid(bench: Bench, info: dict[str, Any]) -> int | None:
    """The tunnel supervisor of the server `up` reported, if this tether has one: from
    ``up --json`` or from the supervisor's record in the state directory."""
    for key in ("supervisor", "tunnel"):
        value = info.get(key)
        if isinstance(value, dict) and isinstance(value.get("pid"), int):
            return int(value["pid"])
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    record = Path(bench.tether_env["JUPYTER_TETHER_STATE_DIR"]) / "supervisors"
    record = record / f"{info.get('name')}.json"
    with contextlib.suppress(OSError, ValueError):
        pid = json.loads(record.read_text()).get("pid")
        if isinstance(pid, int) and Path(f"/proc/{pid}").exists():
            return pid
    return None


@scenario("scale", "scale: K accounts' `up` in parallel, memory per server (absolute)")
def scale(bench: Bench, sizes: Sizes) -> Outcome:
    out = Outcome()
    k = sizes.scale_accounts
    parallel = Figure(f"{k} accounts' `up` in parallel, wall time", "s", absolute=True)
    hosts = [scale_host(i) for i in range(1, k + 1)]
    start = time.monotonic()
    procs = [bench.tether_popen("up", h, "--json", "--no-browser") for h in hosts]
    infos: list[dict[str, Any]] = []
    failures: list[str] = []
    try:
        for host, proc in zip(hosts, procs, strict=True):
            stdout, stderr = proc.communicate(timeout=600)
            if proc.returncode == 0:
                infos.append(json.loads(stdout))
            else:
                failures.append(f"{host}: exit {proc.returncode}: {stderr.strip()[-200:]}")
        wall = time.monotonic() - start
        if failures:
            raise NotMeasured("; ".join(failures))
        out.add(parallel, wall)
        time.sleep(2)  # let the servers settle into idle before reading their memory
        servers = [rss_mb(int(info["pid"])) for info in infos]
        out.add(SERVER_RSS, sum(servers) / len(servers))
        masters = [p for p in (bench.master_pid(h) for h in hosts) if p is not None]
        if masters:
            out.add(MASTER_RSS, sum(rss_mb(p) for p in masters) / len(masters))
        else:
            out.skip(MASTER_RSS, "no ssh master found")
        supervisors = [p for p in (supervisor_pid(bench, i) for i in infos) if p is not None]
        if supervisors:
            out.add(SUPERVISOR_RSS, sum(rss_mb(p) for p in supervisors) / len(supervisors))
        else:
            out.skip(SUPERVISOR_RSS, NO_SUPERVISOR)
        out.raw["server_rss_mb"] = servers
        out.raw["timings"] = [i.get("timings") for i in infos]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
        downs = [bench.tether_popen("down", h) for h in hosts]
        for proc in downs:
            proc.communicate(timeout=120)
    return out
