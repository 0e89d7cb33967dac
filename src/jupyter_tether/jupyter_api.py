"""Talking to a Jupyter server through the local forward (plain http.client: no proxies)."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any


class Unreachable(Exception):
    """Nothing answered (connection refused, reset, or closed before a response)."""


def request(
    port: int, method: str, path: str, token: str | None, *, timeout: float = 5.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        conn.request(method, path, body=b"" if method == "POST" else None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(str(exc) or type(exc).__name__) from exc
    finally:
        conn.close()


def status(port: int, token: str, *, timeout: float = 5.0) -> dict[str, Any] | None:
    """``GET /api/status`` (authenticated, not counted as activity); None unless 200."""
    try:
        code, body = request(port, "GET", "/api/status?no_track_activity=1", token, timeout=timeout)
    except Unreachable:
        return None
    if code != 200:
        return None
    data = json.loads(body.decode() or "{}")
    return data if isinstance(data, dict) else None


def wait_status(port: int, token: str, *, seconds: float) -> tuple[dict[str, Any] | None, str]:
    """Poll until an authenticated status answers or ``seconds`` pass; (status, last problem)."""
    deadline = time.monotonic() + seconds
    problem = "no answer"
    delay = 0.05
    while True:
        try:
            code, body = request(port, "GET", "/api/status?no_track_activity=1", token, timeout=3)
            if code == 200:
                data = json.loads(body.decode() or "{}")
                return (data if isinstance(data, dict) else {}), ""
            problem = f"HTTP {code}"
        except Unreachable as exc:
            problem = str(exc)
        if time.monotonic() + delay > deadline:
            return None, problem
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
