"""A model host on a loopback port for the model store's tests: `/mirror/<model id>/<file>`,
with Range requests, stated hashes (ETag) and connections that drop half-way."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class ModelServer:
    """A mirror on a loopback port: `/mirror/<model id>/<file>`, with Range support."""

    files: dict[str, bytes]
    etags: dict[str, str] = field(default_factory=dict)
    """ETag (a stated SHA-256) to send per path; none for the others."""
    cut_once: set[str] = field(default_factory=set)
    """Paths whose first answer stops half-way (the connection drops)."""
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def mirror(self) -> str:
        return f"http://127.0.0.1:{self.port}/mirror/"

    async def start(self) -> ModelServer:
        app = web.Application()
        app.router.add_get("/mirror/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["tail"]
        ranged = request.headers.get("Range")
        self.requests.append((path, ranged))
        data = self.files.get(path)
        if data is None:
            raise web.HTTPNotFound
        headers = {"Content-Type": "application/octet-stream"}
        if path in self.etags:
            headers["ETag"] = f'"{self.etags[path]}"'
        start, status = 0, 200
        if ranged:
            match = re.fullmatch(r"bytes=(\d+)-", ranged)
            assert match, ranged
            start, status = int(match.group(1)), 206
            if start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        if path in self.cut_once:
            self.cut_once.discard(path)
            await response.write(body[: len(body) // 2])
            await asyncio.sleep(0.05)  # let the half reach the client before the drop
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write(body)
        await response.write_eof()
        return response
