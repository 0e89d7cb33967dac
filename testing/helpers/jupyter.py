"""Talking to a Jupyter server as a browser does: HTTP over a Unix socket, and kernels
over their websocket. Every wait here is bounded by a count or a deadline."""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from typing import Any

import websocket

from jupyter_tether import jupyter_api


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a server listening on the Unix socket ``path``."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def kernel_websocket(
    token: str, kernel: str, *, port: int | None = None, sock: str | None = None
) -> Any:
    """The channels websocket of ``kernel``, on a local TCP ``port`` or Unix ``sock``."""
    path = f"/api/kernels/{kernel}/channels"
    header = [f"Authorization: token {token}"]
    if sock is not None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(60)
        s.connect(sock)
        return websocket.create_connection(f"ws://localhost{path}", header=header, socket=s)
    return websocket.create_connection(f"ws://127.0.0.1:{port}{path}", header=header, timeout=60)


def send_execute(ws: Any, code: str, *, session: str, username: str, store_history: bool) -> str:
    """Send an ``execute_request`` for ``code``; return its msg_id."""
    msg_id = uuid.uuid4().hex
    ws.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "username": username,
                    "session": session,
                    "msg_type": "execute_request",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {"code": code, "silent": False, "store_history": store_history},
                "channel": "shell",
            }
        )
    )
    return msg_id


def run_cell(ws: Any, code: str) -> str:
    """Run ``code`` and return what it printed or evaluated to (two minutes at most)."""
    msg_id = send_execute(ws, code, session=uuid.uuid4().hex, username="test", store_history=True)
    out: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # bounded: one cell, two minutes at most
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "execute_result":
            out.append(str(msg["content"]["data"]["text/plain"]))
        elif kind == "stream":
            out.append(str(msg["content"]["text"]))
        elif kind == "error":
            raise AssertionError(f"kernel error: {msg['content']['ename']}")
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out).strip()
    raise AssertionError("no result from the kernel within 2 minutes")


def execute_reply(ws: Any, session: str, code: str) -> None:
    """Run ``code`` and return once its ``execute_reply`` arrives (an ok one)."""
    msg_id = send_execute(ws, code, session=session, username="bench", store_history=False)
    for _ in range(200):  # a tiny cell produces a handful of messages
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg.get("msg_type") == "execute_reply":
            if msg["content"].get("status") != "ok":
                raise RuntimeError(f"kernel: {msg['content']}")
            return
    raise RuntimeError("no execute_reply from the kernel")


def new_kernel(port: int, token: str) -> str:
    """Start a kernel through the REST API behind local ``port``; return its id."""
    code, body = jupyter_api.request(port, "POST", "/api/kernels", token, timeout=30)
    assert code == 201, body
    return str(json.loads(body)["id"])


def run_on(port: int, token: str, kernel: str, code: str) -> str:
    """:func:`run_cell` ``code`` in the running ``kernel``."""
    ws = kernel_websocket(token, kernel, port=port)
    try:
        return run_cell(ws, code)
    finally:
        ws.close()


def run_in_kernel(port: int, token: str, code: str) -> str:
    """Start a kernel through the REST API and run ``code`` over its websocket."""
    return run_on(port, token, new_kernel(port, token), code)
