"""Talking to an instance's real Jupyter server through demanager's proxy: contents API
and a kernel over WebSocket, authenticated with an API token (``X-Auth-Token``)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import websocket


class Notebook:
    """The notebook behind an instance's ``spec.annotations.url`` (the proxy's address)."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        assert parts.path.endswith("/") and "token" not in parts.query, url
        self.token = token
        self.base = url
        self.ws_base = f"ws://{parts.netloc}{parts.path}"
        self.http = httpx.Client(base_url=self.base, headers={"X-Auth-Token": token},
                                 timeout=30.0)

    def __enter__(self) -> Notebook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def status(self) -> int:
        try:
            return self.http.get("api/status").status_code
        except httpx.HTTPError:
            return 0

    def started(self) -> str:
        """When the Jupyter server behind the proxy started: tells one server from the next."""
        response = self.http.get("api/status")
        response.raise_for_status()
        return str(response.json()["started"])

    def refusal(self) -> str:
        """The proxy's error code for this notebook right now (it must refuse)."""
        response = self.http.get("api/status")
        assert response.status_code in (400, 401), response.text
        return str(response.json()["error_code"])

    def write(self, path: str, text: str) -> None:
        response = self.http.put(
            f"api/contents/{path}", json={"type": "file", "format": "text", "content": text}
        )
        response.raise_for_status()

    def read(self, path: str) -> str:
        response = self.http.get(f"api/contents/{path}", params={"content": "1"})
        response.raise_for_status()
        return str(response.json()["content"])

    def execute(self, code: str, timeout: float = 60.0) -> str:
        """Run ``code`` in a fresh kernel over the WebSocket channels; return its text result."""
        kernel = self.http.post("api/kernels", json={"name": "python3"})
        kernel.raise_for_status()
        kernel_id = kernel.json()["id"]
        ws = websocket.create_connection(
            f"{self.ws_base}api/kernels/{kernel_id}/channels", timeout=timeout,
            header=[f"X-Auth-Token: {self.token}"],
        )
        try:
            msg_id = uuid.uuid4().hex
            ws.send(json.dumps(_execute_request(msg_id, code)))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                message: dict[str, Any] = json.loads(ws.recv())
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if message["msg_type"] == "execute_result":
                    return str(message["content"]["data"]["text/plain"])
                if message["msg_type"] == "error":
                    raise AssertionError(f"kernel error: {message['content']}")
            raise AssertionError("no execute_result before the deadline")
        finally:
            ws.close()


def outcome(notebook: Notebook, code: str, timeout: float = 120.0) -> str:
    """How running ``code`` in a fresh kernel ends: ``"result"``, ``"error: {ename}"``, or
    ``"died"`` when the kernel process was killed (Jupyter then restarts it)."""
    kernel = notebook.http.post("api/kernels", json={"name": "python3"})
    kernel.raise_for_status()
    ws = websocket.create_connection(
        f"{notebook.ws_base}api/kernels/{kernel.json()['id']}/channels", timeout=timeout,
        header=[f"X-Auth-Token: {notebook.token}"],
    )
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps(_execute_request(msg_id, code)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message: dict[str, Any] = json.loads(ws.recv())
            kind, content = message["msg_type"], message.get("content", {})
            if kind == "status" and content.get("execution_state") in ("restarting", "dead"):
                return "died"
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if kind == "execute_result":
                return "result"
            if kind == "error":
                return f"error: {content.get('ename')}"
        return "timeout"
    finally:
        ws.close()


def _execute_request(msg_id: str, code: str) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "session": uuid.uuid4().hex,
            "username": "test",
            "version": "5.3",
            "date": "",
        },
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "content": {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "buffers": [],
    }
