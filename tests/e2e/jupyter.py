"""Talking to an instance's real Jupyter server: contents API and a kernel over WebSocket."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import websocket


class Notebook:
    """The Jupyter server behind an instance's ``spec.annotations.url``."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.token = parse_qs(parts.query)["token"][0]
        base_path = parts.path.rsplit("lab", 1)[0]
        self.base = f"{parts.scheme}://{parts.netloc}{base_path}"
        self.ws_base = f"ws://{parts.netloc}{base_path}"
        self.http = httpx.Client(
            base_url=self.base, headers={"Authorization": f"token {self.token}"}, timeout=30.0
        )

    def __enter__(self) -> Notebook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def status(self) -> int:
        try:
            return self.http.get("api/status").status_code
        except httpx.HTTPError:
            return 0

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
            f"{self.ws_base}api/kernels/{kernel_id}/channels?token={self.token}", timeout=timeout
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
