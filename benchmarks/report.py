"""What a run found: machine facts, per-run raw numbers, and the Markdown table."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.registry import Figure, Outcome
from benchmarks.stats import summary

TIMES = "\u00d7"  # the multiplication sign, as in 0.42x


@dataclass
class ScenarioResult:
    name: str
    title: str
    runs: list[Outcome] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    error: str | None = None  # the scenario stopped early with this error


def _cmd(argv: Sequence[str]) -> str:
    try:
        res = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (res.stdout + res.stderr).strip()
    return text.splitlines()[0] if text else "unavailable"


def machine(env: Path | None) -> dict[str, Any]:
    cpu = "unknown"
    try:
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = found.group(1) if found else cpu
    except OSError:
        pass
    mem = "unknown"
    try:
        found = re.search(r"MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text())
        mem = f"{int(found.group(1)) // 1024} MB" if found else mem
    except OSError:
        pass
    from jupyter_tether import __version__

    root = Path(__file__).resolve().parent.parent
    commit = _cmd(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = _cmd(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
    versions = {
        "jupyter-tether": __version__,
        "git": commit + (" (uncommitted changes)" if dirty not in ("", "unavailable") else ""),
        "python": sys.version.split()[0],
        "openssh": _cmd(["ssh", "-V"]),
        "autossh": _cmd(["autossh", "-V"]),
        "tmux": _cmd(["tmux", "-V"]),
        "system python3": _cmd(["/usr/bin/python3", "--version"]),
    }
    if env is not None:
        versions["jupyterlab"] = _cmd(
            [str(env / "bin" / "python"), "-c", "import jupyterlab; print(jupyterlab.__version__)"]
        )
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "load average": os.getloadavg(),
        "versions": versions,
    }


def to_json(results: Sequence[ScenarioResult], info: dict[str, Any], args: dict[str, Any]) -> Any:
    return {
        "machine": info,
        "arguments": args,
        "scenarios": [
            {
                "name": r.name,
                "title": r.title,
                "error": r.error,
                "seconds": r.seconds,
                "figures": {
                    name: {
                        "unit": fig.unit,
                        "versus": fig.versus,
                        "better": fig.better,
                        "absolute": fig.absolute,
                    }
                    for name, fig in _figures(r).items()
                },
                "runs": [{"values": o.values, "missing": o.missing, "raw": o.raw} for o in r.runs],
                "summary": {name: summary(vals) for name, vals in _values(r).items() if vals},
            }
            for r in results
        ],
    }


def _figures(result: ScenarioResult) -> dict[str, Figure]:
    figures: dict[str, Figure] = {}
    for run in result.runs:
        for name, fig in run.figures.items():
            figures.setdefault(name, fig)
    return figures


def _values(result: ScenarioResult) -> dict[str, list[float]]:
    return {
        name: [run.values[name] for run in result.runs if name in run.values]
        for name in _figures(result)
    }


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def markdown(results: Sequence[ScenarioResult], info: dict[str, Any]) -> str:
    versions = info["versions"]
    lines = [
        f"Run {info['date']} on {info['cpu']} ({info['cores']} cores, {info['memory']}); "
        f"jupyter-tether {versions['jupyter-tether']} ({versions['git']}), "
        f"{versions['openssh']}, {versions['autossh']}, "
        f"JupyterLab {versions.get('jupyterlab', '?')}.",
        "",
        "| scenario | figure | unit | median | min | max | runs | ratio of medians |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        figures = _figures(r)
        values = _values(r)
        medians = {name: summary(v)["median"] for name, v in values.items() if v}
        referenced = {f.versus for f in figures.values() if f.versus}
        if r.error:
            lines.append(f"| {r.name} | *failed* | | {_cell(r.error)} | | | {len(r.runs)} | |")
        for name, fig in figures.items():
            vals = values[name]
            reasons = sorted({run.missing[name] for run in r.runs if name in run.missing})
            if not vals:
                why = "; ".join(reasons) or "no value"
                lines.append(
                    f"| {r.name} | {name} | {fig.unit} | not measured: {_cell(why)} | | | 0 | |"
                )
                continue
            s = summary(vals)
            runs = f"{len(vals)}" if not reasons else f"{len(vals)} of {len(r.runs)}"
            ratio = ""
            if fig.versus and fig.versus in medians and medians[fig.versus] > 0:
                ratio = f"{fmt(s['median'] / medians[fig.versus])}{TIMES} {fig.versus}"
            elif fig.absolute:
                ratio = "absolute"
            elif name in referenced:
                ratio = "baseline"
            note = f" ({_cell('; '.join(reasons))})" if reasons else ""
            lines.append(
                f"| {r.name} | {name} | {fig.unit} | {fmt(s['median'])} | {fmt(s['min'])} "
                f"| {fmt(s['max'])} | {runs} | {ratio}{note} |"
            )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "/").split())[:300]
