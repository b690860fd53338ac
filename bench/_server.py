"""A real taskreport server for benchmarks: uvicorn in a thread on a free loopback port, counting the
requests it receives with a small ASGI wrapper."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any


class Counting:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "http":
            self.count += 1
        await self.app(scope, receive, send)


def serve(store_url: str) -> tuple[str, str, Counting, Callable[[], None]]:
    """(url, token, counter, stop) for a server on ``store_url`` with org ``bench``, project ``bench``."""
    import uvicorn

    from taskreport.server import ServerSettings, create_app

    app = create_app(ServerSettings(store_url=store_url, sweep_interval=0))
    with app.store.transaction() as tx:
        tx.ensure_project("bench", "bench")
        token = tx.create_token("bench", name="bench")
    counting = Counting(app)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(counting, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", str(token), counting, stop
