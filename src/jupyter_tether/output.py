"""Progress lines for humans on stderr; results on stdout (plain or JSON)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
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
    notes: list[str] = field(default_factory=list)  # what --json output must carry too
    # Steps may overlap (the uv copy runs while the wheels download): one live line at a
    # time, or two meters would redraw over each other; the others stay silent.
    _drawing: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A line the user must see even with --json (a warning, a new job): said, and
        kept for the JSON result's ``notes``."""
        self.notes.append(text.strip())
        self.say(text)

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

    @property
    def live(self) -> bool:
        """Live progress lines only on a terminal that can take them back."""
        isatty = getattr(self.stream, "isatty", None)
        return (
            not self.quiet
            and callable(isatty)
            and bool(isatty())
            and os.environ.get("TERM", "") != "dumb"
        )

    @contextlib.contextmanager
    def meter(
        self, what: str, total: int | None = None, *, watch: Callable[[], int] | None = None
    ) -> Iterator[Meter]:
        """A live line for a long step on a terminal: bytes so far (of ``total``) and the
        rate, or only the time taken when nothing is counted. ``watch`` is polled for the
        byte count while the step runs (a directory filling up). Off a terminal it shows
        nothing: callers print one plain line with size and rate when the step is done.
        While another meter is drawing (overlapping steps) this one draws nothing either."""
        owns = self.live and self._drawing.acquire(blocking=False)
        m = Meter(self.stream if owns else None, what, total)
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(Meter.EVERY):
                with contextlib.suppress(OSError):
                    if watch is None:
                        m.draw()
                    else:
                        m.set(watch())

        ticker = threading.Thread(target=poll, daemon=True) if m.stream else None
        if ticker:
            ticker.start()
        try:
            yield m
        finally:
            stop.set()
            if ticker:
                ticker.join(timeout=2)
            m.close()
            if owns:
                self._drawing.release()


class Meter:
    """One line redrawn in place: ``  what: 12.3 of 19.3 MB, 8.4 MB/s``."""

    EVERY = 0.2  # seconds between redraws

    def __init__(self, stream: TextIO | None, what: str, total: int | None) -> None:
        self.stream, self.what, self.total = stream, what, total
        self.done = 0
        self.start = time.monotonic()
        self._drawn = 0.0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        self.done = done
        if not self._drawn or time.monotonic() - self._drawn >= self.EVERY:
            self.draw()  # at once, then at most every EVERY seconds

    def text(self) -> str:
        took = max(time.monotonic() - self.start, 1e-3)
        if not self.done and not self.total:
            return f"  {self.what}: {took:.1f} s"
        size = f"{self.done / 1e6:.1f}"
        if self.total:
            size += f" of {self.total / 1e6:.1f} MB ({100 * self.done // self.total}%)"
        else:
            size += " MB"
        if took < self.EVERY:  # too soon for a rate that means anything
            return f"  {self.what}: {size}"
        return f"  {self.what}: {size}, {self.done / 1e6 / took:.1f} MB/s"

    def draw(self) -> None:
        if self.stream is None:
            return
        with self._lock:
            self._drawn = time.monotonic()
            self.stream.write("\r" + self.text() + "\x1b[K")
            self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self._drawn:
            with self._lock:
                self.stream.write("\r\x1b[K")
                self.stream.flush()


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


def stopped_by(marker: Mapping[str, Any]) -> str:
    """The words for a server that ``tether down`` stopped (its server-side marker)."""
    at = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(marker.get("at") or 0)))
    return f"stopped by `tether down` on {marker.get('by') or 'another workstation'} at {at}"
