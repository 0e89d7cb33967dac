"""Live progress on a terminal (sizes and rates on a TTY, plain lines otherwise),
and the stdin pump that reports how much a child has taken."""

from __future__ import annotations

import io
import os
import re
import sys
import time
from pathlib import Path

import pytest

from jupyter_tether import output, proc


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_meter_shows_size_share_and_rate_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    term = Terminal()
    progress = output.Progress(stream=term)
    with progress.meter("copying uv", 20_000_000) as meter:
        meter.add(5_000_000)  # the first update draws at once
        first = term.getvalue()
        time.sleep(output.Meter.EVERY + 0.05)
        meter.add(5_000_000)
        time.sleep(2 * output.Meter.EVERY)  # the ticker redraws in the meantime
    assert first == "\r  copying uv: 5.0 of 20.0 MB (25%)\x1b[K"  # no rate that early
    assert re.search(
        r"\r  copying uv: 10\.0 of 20\.0 MB \(50%\), [\d.]+ MB/s\x1b\[K", term.getvalue()
    )
    assert term.getvalue().endswith("\r\x1b[K")  # the line is taken back when done


def test_meter_without_bytes_shows_the_time_and_a_watched_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TERM", "xterm")
    term = Terminal()
    with output.Progress(stream=term).meter("installing on the server"):
        time.sleep(2.5 * output.Meter.EVERY)
    assert re.search(r"\r  installing on the server: \d+\.\d s\x1b\[K", term.getvalue())
    term = Terminal()
    sizes = iter(range(1_000_000, 100_000_000, 1_000_000))
    with output.Progress(stream=term).meter("downloading wheels", watch=lambda: next(sizes)):
        time.sleep(2.5 * output.Meter.EVERY)
    assert re.search(r"downloading wheels: \d+\.\d MB, [\d.]+ MB/s", term.getvalue())


@pytest.mark.parametrize("case", ["pipe", "quiet", "dumb"])
def test_no_live_lines_off_a_terminal(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    monkeypatch.setenv("TERM", "dumb" if case == "dumb" else "xterm")
    stream = io.StringIO() if case == "pipe" else Terminal()
    progress = output.Progress(stream=stream, quiet=case == "quiet")
    assert not progress.live
    with progress.meter("copying", 10) as meter:
        meter.add(5)
        time.sleep(2 * output.Meter.EVERY)
    assert stream.getvalue() == ""


def test_overlapping_meters_draw_one_line_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The uv copy runs while the wheels download: only the first meter draws, so the
    two never redraw over each other; after it, the next one draws again."""
    monkeypatch.setenv("TERM", "xterm")
    term = Terminal()
    progress = output.Progress(stream=term)
    with (
        progress.meter("downloading wheels", watch=lambda: 1_000_000),
        progress.meter("copying uv", 20_000_000) as inner,
    ):
        inner.add(5_000_000)
        time.sleep(2 * output.Meter.EVERY)
    assert "downloading wheels" in term.getvalue()
    assert "copying uv" not in term.getvalue()
    with progress.meter("copying wheels", 10_000_000) as meter:
        meter.add(1_000_000)
    assert "copying wheels: 1.0 of 10.0 MB" in term.getvalue()


def test_fed_reports_every_byte_the_child_took(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    src = tmp_path / "blob"
    src.write_bytes(data)
    seen: list[int] = []
    code = "import sys; print(len(sys.stdin.buffer.read()))"
    res = proc.run([sys.executable, "-c", code], stdin_file=src, fed=seen.append, timeout=30)
    assert res.ok, res.stderr
    assert int(res.stdout) == len(data) == sum(seen)
    assert len(seen) > 1  # in chunks, so a meter can move


def test_fed_does_not_hang_when_the_child_stops_reading(tmp_path: Path) -> None:
    src = tmp_path / "blob"
    src.write_bytes(os.urandom(8 << 20))  # far more than a pipe holds
    seen: list[int] = []
    res = proc.run(["true"], stdin_file=src, fed=seen.append, timeout=30)
    assert res.ok
    assert sum(seen) < 8 << 20
