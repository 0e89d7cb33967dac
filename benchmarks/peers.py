"""Peer tools from PyPI, installed into a venv of their own and run for real."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench import BENCH_USER, CACHE, Bench
from testing.accounts import find_uv, system_python
from testing.helpers.users import home_of
from testing.sshd import free_port

JUPYTER_FORWARD = "jupyter-forward"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def install(package: str) -> tuple[Path | None, str]:
    """A venv with ``package`` from PyPI (cached between runs); (bin dir, version or why not)."""
    venv = CACHE / "peers" / package
    python = venv / "bin" / "python"
    if not python.exists():
        uv = find_uv()
        made = subprocess.run(
            [uv, "venv", "--quiet", "--python", system_python(), str(venv)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if made.returncode != 0:
            return None, f"uv venv failed: {made.stderr.strip()[-200:]}"
    got = subprocess.run(
        [find_uv(), "pip", "install", "--quiet", "--python", str(python), package],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if got.returncode != 0:
        return None, f"pip install {package} failed: {got.stderr.strip()[-200:]}"
    version = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.strip()
    return venv / "bin", version


def jupyter_forward(bench: Bench, *, seconds: float = 90) -> float | str:
    """Run ``jupyter-forward tb-main`` with Jupyter on the account's PATH: the seconds
    until its local port answers HTTP, or why it could not run."""
    bindir, version = install(JUPYTER_FORWARD)
    if bindir is None:
        return version
    # It reads ~/.ssh/config through paramiko: give it a home of its own with ours.
    fake_home = bench.workdir / "jf-home"
    (fake_home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy(bench.ssh_config, fake_home / ".ssh" / "config")
    bashrc = home_of(BENCH_USER) / ".bashrc"
    saved = bashrc.read_bytes() if bashrc.exists() else None
    line = f'export PATH="{bench.env}/bin:$PATH"\n'.encode()
    bashrc.write_bytes(line + (saved or b""))  # before Debian's "not interactive: return"
    port = free_port()
    env = {**os.environ, "HOME": str(fake_home), "COLUMNS": "200", "TERM": "dumb"}
    argv = [str(bindir / "jupyter-forward"), "--port", str(port), bench.main_host]
    argv += ["--identity", str(bench.server.client_key)]
    start = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    try:
        deadline = start + seconds
        while time.monotonic() < deadline and proc.poll() is None:
            if _http_answers(port):
                return time.monotonic() - start
            time.sleep(0.1)
        if proc.poll() is None:
            return f"{JUPYTER_FORWARD} {version}: its port did not answer within {seconds:g} s"
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        return f"{JUPYTER_FORWARD} {version} exited {proc.returncode}: {_last_words(out)}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        if saved is None:
            bashrc.unlink(missing_ok=True)
        else:
            bashrc.write_bytes(saved)


def _http_answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/api")
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _last_words(output: str) -> str:
    lines = [ANSI.sub("", ln).strip(" *─━│╭╮╰╯") for ln in output.splitlines()]
    meaningful = [ln for ln in lines if ln and not set(ln) <= set("*-=")]
    return " / ".join(meaningful[-2:])[:300] or "no output"


if __name__ == "__main__":  # pragma: no cover - a manual check of the installer
    print(install(sys.argv[1] if len(sys.argv) > 1 else JUPYTER_FORWARD))
