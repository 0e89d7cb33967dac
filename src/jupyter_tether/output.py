"""Progress lines for humans on stderr; results on stdout (plain or JSON)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class Progress:
    """One short line per phase (connect, probe, start, ready, forward).

    ``verbose`` adds each phase's duration; ``quiet`` (used with --json) prints nothing.
    Phase timings are kept for ``--json`` output and benchmarks either way.
    """

    verbose: bool = False
    quiet: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    timings: dict[str, float] = field(default_factory=dict)
    bytes_copied: int = 0  # to the server (uv, wheels), for --json and benchmarks

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    @contextlib.contextmanager
    def phase(self, name: str, detail: str = "") -> Iterator[None]:
        start = time.monotonic()
        self.say(f"• {name:<8} {detail}".rstrip())
        try:
            yield
        finally:
            took = time.monotonic() - start
            self.timings[name] = self.timings.get(name, 0.0) + took
            if self.verbose and not self.quiet:
                print(f"  {name} took {took:.2f} s", file=self.stream, flush=True)


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(rows: list[dict[str, str]], columns: list[str]) -> str:
    if not rows:
        return ""
    widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip()]
    for r in rows:
        lines.append("  ".join(r.get(c, "").ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(lines)


def ago(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"
