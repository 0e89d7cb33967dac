"""Small helpers for tests: run the CLI in-process, write profiles, look at processes."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from jupyter_tether import cli


@dataclass(frozen=True)
class Run:
    rc: int
    out: str
    err: str


class Tether:
    """``tether(*argv)`` runs the CLI in this process and captures what it prints."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.profiles: dict[str, dict[str, object]] = {}

    def __call__(self, *argv: str) -> Run:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(list(argv))
        return Run(rc, out.getvalue(), err.getvalue())

    def profile(self, name: str, **keys: object) -> None:
        self.profiles[name] = keys
        self.write()

    def write(self) -> None:
        lines = []
        for name, keys in self.profiles.items():
            lines.append(f'[hosts."{name}"]')
            lines.extend(f"{k} = {toml_value(v)}" for k, v in keys.items())
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(lines) + "\n")


def toml_value(value: object) -> str:
    """Enough TOML for profiles: strings, numbers, booleans, lists, inline tables."""
    import json

    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def remote_procs(user: str, pattern: str) -> list[str]:
    """Command lines of ``user``'s processes matching ``pattern`` (zombies excluded)."""
    res = subprocess.run(
        ["ps", "-u", user, "-o", "stat=,args="], capture_output=True, text=True, check=False
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
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)


def kill_masters(runtime: Path) -> None:
    """End the ssh ControlMasters a test left (they persist by design)."""
    cm = runtime / "cm"
    if not cm.is_dir():
        return
    for sock in cm.iterdir():
        if sock.is_socket():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "placeholder"],
                capture_output=True,
                timeout=10,
                check=False,
                env={**os.environ},
            )


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
