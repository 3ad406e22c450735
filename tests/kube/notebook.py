"""The stand-in's "container": a tiny Jupyter look-alike, one per running pod.

It listens on the pod's own loopback address and container port, and only there. It
demands ``Authorization: token <JUPYTER_TOKEN>`` (or ``?token=``) as Jupyter does,
and answers the calls demanager and the conformance suite make, in Jupyter's shapes:

* ``GET {base_url}api/status``: 200 with ``started``, ``last_activity``,
  ``connections`` and ``kernels``;
* ``GET {base_url}api/contents/{path}`` (``?content=1``) and ``PUT`` with
  ``{"type": "file", "format": "text", "content": …}`` or ``{"type": "directory"}``,
  on a directory that stands for the pod's volume (the claim's folder in the
  stand-in's state dir), so files outlive the pod and go with the claim.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status,
                        headers={"Content-Type": "application/json"})


class NotebookServer:
    def __init__(self, *, address: str, port: int, base_url: str, token: str,
                 root: Path | None) -> None:
        self.address = address
        self.port = port
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.token = token
        self.root = root
        self.started = _iso(datetime.now(UTC).timestamp())
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on ``address:port``; raises OSError when the address is taken."""
        app = web.Application(middlewares=[self._auth])
        app.router.add_get(f"{self.base_url}api/status", self._status)
        app.router.add_get(f"{self.base_url}api/contents", self._get)
        app.router.add_get(f"{self.base_url}api/contents/{{path:.*}}", self._get)
        app.router.add_put(f"{self.base_url}api/contents/{{path:.*}}", self._put)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.address, self.port, reuse_address=True).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if given != f"token {self.token}" and request.query.get("token") != self.token:
            return _json({"message": "Forbidden", "reason": None}, 403)
        response: web.StreamResponse = await handler(request)
        return response

    async def _status(self, request: web.Request) -> web.Response:
        return _json({"started": self.started, "last_activity": self.started,
                      "connections": 0, "kernels": 0})

    def _path(self, relative: str) -> Path:
        if self.root is None:
            raise web.HTTPNotFound(text="no volume")
        target = (self.root / relative).resolve()
        if target != self.root.resolve() and self.root.resolve() not in target.parents:
            raise web.HTTPNotFound(text="outside the root")
        return target

    def _model(self, relative: str, path: Path, content: bool) -> dict[str, Any]:
        info = path.stat()
        model: dict[str, Any] = {
            "name": path.name, "path": relative, "writable": True,
            "created": _iso(info.st_ctime), "last_modified": _iso(info.st_mtime),
            "content": None, "format": None, "mimetype": None, "size": None,
        }
        if path.is_dir():
            model["type"] = "directory"
            if content:
                model["format"] = "json"
                model["content"] = [
                    self._model(f"{relative}/{child.name}".lstrip("/"), child, False)
                    for child in sorted(path.iterdir())
                ]
            return model
        model.update(type="file", mimetype="text/plain", size=info.st_size)
        if content:
            model.update(format="text", content=path.read_text(encoding="utf-8"))
        return model

    async def _get(self, request: web.Request) -> web.Response:
        relative = request.match_info.get("path", "").strip("/")
        path = self._path(relative)
        if not path.exists():
            return _json({"message": f"No such file or directory: {relative}", "reason": None},
                         404)
        return _json(self._model(relative, path, request.query.get("content", "1") != "0"))

    async def _put(self, request: web.Request) -> web.Response:
        relative = request.match_info["path"].strip("/")
        path = self._path(relative)
        body = await request.json()
        if not path.parent.is_dir():
            return _json({"message": f"No such directory: {path.parent.name}", "reason": None},
                         404)
        existed = path.exists()
        if body.get("type") == "directory":
            path.mkdir(exist_ok=True)
        elif body.get("type") == "file" and body.get("format", "text") == "text":
            text = body.get("content") or ""
            path.write_text(text, encoding="utf-8")
            os.utime(path)
        else:
            return _json({"message": "only text files and directories", "reason": None}, 400)
        return _json(self._model(relative, path, False), 200 if existed else 201)
