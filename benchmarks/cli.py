"""``python -m benchmarks``: set up the sandbox, run the scenarios, write the report."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from benchmarks import report, scenarios
from benchmarks.bench import open_bench
from benchmarks.registry import REGISTRY, NotMeasured
from benchmarks.sizes import choose

RESULTS = Path(__file__).resolve().parent / "results"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure jupyter-tether beside what users would use instead, "
        "on a real sshd in a sandbox on this machine (needs root).",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the sizes of the issue (slow)")
    size.add_argument("--smoke", action="store_true", help="smallest sizes, one repetition")
    p.add_argument("--repeat", type=int, metavar="N", help="repetitions of each scenario")
    p.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this scenario (repeatable, or comma-separated)",
    )
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument(
        "--out", type=Path, default=RESULTS, help="directory for latest.json and latest.md"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    scenarios.load()
    if args.list:
        for s in REGISTRY.values():
            print(f"{s.name:14} {s.title}")
        return 0
    only = [n for item in args.only or [] for n in item.split(",") if n]
    unknown = [n for n in only if n not in REGISTRY]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; try --list", file=sys.stderr)
        return 2
    if args.repeat is not None and args.repeat < 1:
        print("--repeat must be at least 1", file=sys.stderr)
        return 2
    sizes = choose(full=args.full, smoke=args.smoke, repeat=args.repeat)
    selected = [s for s in REGISTRY.values() if not only or s.name in only]

    results: list[report.ScenarioResult] = []
    with open_bench(scale_accounts=sizes.scale_accounts) as bench:
        info = report.machine(bench.env)
        for sc in selected:
            result = report.ScenarioResult(sc.name, sc.title)
            results.append(result)
            _say(f"{sc.name}: {sc.title}")
            try:
                for i in range(sizes.repeat):
                    start = time.monotonic()
                    outcome = sc.run(bench, sizes)
                    result.seconds.append(round(time.monotonic() - start, 3))
                    result.runs.append(outcome)
                    shown = ", ".join(f"{k} {report.fmt(v)}" for k, v in outcome.values.items())
                    _say(f"  run {i + 1}/{sizes.repeat}: {shown}")
            except NotMeasured as exc:
                result.error = f"not measured: {exc}"
                _say(f"  {result.error}")
            except Exception as exc:  # one broken scenario must not lose the others
                traceback.print_exc()
                result.error = f"{type(exc).__name__}: {exc}"
                _say(f"  failed: {result.error}")
            finally:
                bench.end_scenario()

    arguments = {
        "argv": list(argv) if argv is not None else sys.argv[1:],
        "sizes": sizes.__dict__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    data = report.to_json(results, info, arguments)
    (args.out / "latest.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    table = report.markdown(results, info)
    (args.out / "latest.md").write_text(table)
    print(table)
    return 1 if any(r.error and not r.error.startswith("not measured") for r in results) else 0


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
