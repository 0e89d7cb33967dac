"""Small helpers for tests only: look at processes, stop supervisors, run isolated.

What the benchmarks use too (the in-process CLI, ``as_user``, ssh masters) is in
``testing.helpers``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jupyter_tether.proc import pid_alive
from testing.helpers.cli import Run


def remote_procs(user: str, pattern: str) -> list[str]:
    """Command lines of ``user``'s processes matching ``pattern`` (zombies excluded)."""
    res = subprocess.run(
        ["ps", "-ww", "-u", user, "-o", "stat=,args="], capture_output=True, text=True, check=False
    )
    out = []
    for line in res.stdout.splitlines():
        stat, _, args = line.strip().partition(" ")
        if pattern in args and not stat.startswith("Z"):
            out.append(args)
    return out


def kill_supervisors(state_dir: Path) -> None:
    """Stop the tunnel supervisors a test's `up`s started (they outlive the command)."""
    import json
    import signal
    import time

    for status in (state_dir / "supervisors").glob("*.json"):
        try:
            pid = int(json.loads(status.read_text())["pid"])
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, KeyError):
            continue
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                break
            time.sleep(0.05)


def run_isolated(args: list[str]) -> Run:
    """The CLI in a fresh network namespace that has only ``lo``, so that no name lookup
    leaves this machine (root only)."""
    ns = f"tt-iso-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        res = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "jupyter_tether", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ.copy(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return Run(res.returncode, res.stdout, res.stderr)
