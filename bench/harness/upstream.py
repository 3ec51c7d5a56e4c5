"""The upstream the I/O-bound handler calls: an aiohttp server on 127.0.0.1, in a thread of the harness, that
answers every request after a fixed delay."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any


class Upstream:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-upstream", daemon=True)

    def start(self) -> Upstream:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the upstream server did not start within 30 s")
        if self._error is not None:
            raise RuntimeError(f"the upstream server did not start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        from aiohttp import web

        loop = asyncio.new_event_loop()
        self._loop = loop
        delay = self.delay

        async def answer(request: Any) -> Any:
            await asyncio.sleep(delay)
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", answer)
        runner = web.AppRunner(app, access_log=None)
        try:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            port = listener.getsockname()[1]
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, listener, backlog=1024).start())
            self.url = f"http://127.0.0.1:{port}/"
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
