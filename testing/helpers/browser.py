"""Headless Chromium for the browser tests: start one, wait on the page, end it hard."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
T = TypeVar("T")


def available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def chromium(profile: Path) -> WebDriver:
    """A headless Chromium with its own profile directory ``profile``, driven over
    chromedriver (selenium)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for(what: str, check: Callable[[], T | None], seconds: float = 60) -> T:
    """Poll ``check`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got = check()
        except Exception:  # the page is changing under us: look again
            got = None
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def _processes_using(profile: Path) -> list[int]:
    """Pids of the processes whose command line names the profile directory: the
    browser and its helpers (renderers, zygotes, GPU process)."""
    needle = f"--user-data-dir={profile}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile
        if needle in cmdline.split(b"\0"):
            pids.append(int(entry))
    return pids


def kill_browser(driver: WebDriver, profile: Path) -> list[int]:
    """SIGKILL the browser started with ``profile`` (every process of it, at once: as
    when a laptop's power goes), then end chromedriver. Returns the pids killed."""
    pids = _processes_using(profile)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for("the killed browser to be gone", lambda: not _processes_using(profile) or None, 15)
    driver.service.stop()  # chromedriver: its browser is gone, so no quit() over it
    return pids


def end_leftovers(profile: Path) -> None:
    """After a test: kill whatever still runs with ``profile`` (a failed quit)."""
    for pid in _processes_using(profile):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
