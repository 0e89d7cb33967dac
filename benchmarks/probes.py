"""Talking to a Jupyter server the way a browser does, over TCP or its Unix socket.

Every loop here is bounded by a count or a deadline.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from dataclasses import dataclass

from testing.helpers.jupyter import UnixHTTPConnection, execute_reply, kernel_websocket

CHUNK = 1 << 20


@dataclass(frozen=True)
class Endpoint:
    """Where a Jupyter server answers: a local TCP port, or a Unix socket path."""

    token: str
    port: int | None = None
    sock: str | None = None

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.sock is not None:
            return UnixHTTPConnection(self.sock, timeout)
        assert self.port is not None
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}


def get(ep: Endpoint, path: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = ep.connection(timeout)
    try:
        conn.request("GET", path, headers=ep.headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def answers(ep: Endpoint, *, timeout: float = 1.0) -> bool:
    """Whether an authenticated ``GET /api/status`` returns 200 right now."""
    try:
        status, _ = get(ep, "/api/status", timeout=timeout)
    except (OSError, http.client.HTTPException):
        return False
    return status == 200


def wait_answering(ep: Endpoint, *, seconds: float, every: float = 0.05) -> float | None:
    """Poll until ``ep`` answers; the seconds it took, or None after ``seconds``."""
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        if answers(ep, timeout=min(1.0, max(0.1, deadline - time.monotonic()))):
            return time.monotonic() - start
        time.sleep(every)
    return None


def download(ep: Endpoint, path: str, *, expect: int, timeout: float = 300) -> float:
    """Fetch ``path`` and return the seconds it took; checks the size."""
    conn = ep.connection(timeout)
    try:
        start = time.monotonic()
        conn.request("GET", path, headers=ep.headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}")
        got = 0
        for _ in range(expect // CHUNK + 2):
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            got += len(chunk)
        elapsed = time.monotonic() - start
    finally:
        conn.close()
    if got != expect:
        raise RuntimeError(f"GET {path}: {got} bytes, expected {expect}")
    return elapsed


def rest_latencies(ep: Endpoint, calls: int) -> list[float]:
    """Seconds per ``GET /api/contents`` of an empty listing on one keep-alive
    connection, as a browser tab does, after a few warm-up calls."""
    conn = ep.connection(10)
    path = "/api/contents?content=0"
    out: list[float] = []
    try:
        for i in range(calls + 5):
            start = time.monotonic()
            conn.request("GET", path, headers=ep.headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {resp.status}")
            if i >= 5:
                out.append(time.monotonic() - start)
    finally:
        conn.close()
    return out


def kernel_latencies(ep: Endpoint, executions: int) -> list[float]:
    """Seconds from ``execute_request`` to ``execute_reply`` for a tiny cell, over the
    kernel's websocket, after a few warm-up executions. Starts and deletes a kernel."""
    conn = ep.connection(60)
    try:
        conn.request("POST", "/api/kernels", body=b"{}", headers=ep.headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 201:
            raise RuntimeError(f"POST /api/kernels: HTTP {resp.status}")
    finally:
        conn.close()
    kernel = json.loads(body)["id"]
    try:
        ws = kernel_websocket(ep.token, kernel, port=ep.port, sock=ep.sock)
        try:
            session = uuid.uuid4().hex
            out = []
            for i in range(executions + 3):
                start = time.monotonic()
                execute_reply(ws, session, "1 + 1")
                if i >= 3:
                    out.append(time.monotonic() - start)
            return out
        finally:
            ws.close()
    finally:
        conn = ep.connection(30)
        try:
            conn.request("DELETE", f"/api/kernels/{kernel}", headers=ep.headers)
            conn.getresponse().read()
        finally:
            conn.close()
