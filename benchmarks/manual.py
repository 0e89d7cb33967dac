"""The manual recipe, scripted: what a user types without jupyter-tether.

    python3 -m venv ~/jl && ~/jl/bin/pip install jupyterlab         # once
    tmux new -d -s jl '~/jl/bin/jupyter lab --no-browser --port=P'    # once per server
    ssh host '~/jl/bin/jupyter server list --json'                     # read the token
    ssh -N -L 127.0.0.1:L:127.0.0.1:P host                             # the tunnel

Each step is one real ``ssh`` (no multiplexing, as most users have it), so the
figures include the authentications a user pays for.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import time

from benchmarks.bench import Bench
from benchmarks.probes import Endpoint, wait_answering
from testing.sshd import free_port


class RecipeFailed(RuntimeError):
    pass


def remote(bench: Bench, host: str, command: str, *, timeout: float = 60) -> str:
    res = bench.ssh(host, command, timeout=timeout)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise RecipeFailed(f"ssh {host} {command!r}: exit {res.returncode}: {' / '.join(tail)}")
    return res.stdout


def start_in_tmux(bench: Bench, host: str, jupyter: str, port: int, *, session: str) -> None:
    lab = f"{jupyter} lab --no-browser --port={port}"
    remote(bench, host, f"tmux new-session -d -s {session} {shlex.quote(lab)}")


def read_token(bench: Bench, host: str, jupyter: str, port: int, *, seconds: float) -> str:
    """Ask ``jupyter server list`` until the server on ``port`` is listed; its token."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out = remote(bench, host, f"{jupyter} server list --json")
        for line in out.splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("port") == port:
                    return str(entry["token"])
        time.sleep(0.2)
    raise RecipeFailed(f"no server on port {port} in `jupyter server list` after {seconds:g} s")


def tunnel(bench: Bench, host: str, remote_end: str) -> tuple[subprocess.Popen[bytes], int]:
    """``ssh -N -L`` to ``remote_end`` (``host:port`` or a socket path); (process, port)."""
    local = free_port()
    spec = f"127.0.0.1:{local}:{remote_end}"
    argv = bench.ssh_argv(host, "-N", "-o", "ExitOnForwardFailure=yes", "-L", spec)
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    return proc, local


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc.stderr is not None:
        proc.stderr.close()


def connect(
    bench: Bench, host: str, jupyter: str, port: int, *, seconds: float = 60
) -> tuple[subprocess.Popen[bytes], Endpoint]:
    """Token from `jupyter server list`, then the tunnel, then wait until the URL answers."""
    token = read_token(bench, host, jupyter, port, seconds=seconds)
    proc, local = tunnel(bench, host, f"127.0.0.1:{port}")
    ep = Endpoint(token=token, port=local)
    if wait_answering(ep, seconds=seconds) is None:
        stop(proc)
        raise RecipeFailed(f"the tunnel to {host}:{port} did not answer within {seconds:g} s")
    return proc, ep


def local(argv: list[str], *, timeout: float) -> None:
    """A workstation-side step of the recipe (pip download, scp)."""
    res = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
    )
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise RecipeFailed(f"{argv[0]} {argv[1]}: exit {res.returncode}: {' / '.join(tail)}")
