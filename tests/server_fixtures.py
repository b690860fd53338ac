"""Fixtures that run a real ``taskreport`` server (uvicorn on a free loopback port, in a thread).

Load them with ``pytest_plugins = ["server_fixtures"]`` (with ``tests`` on ``pythonpath``) or
``from server_fixtures import *``. ``live_server`` runs each test once on SQLite and once on PostgreSQL
(skipped when PostgreSQL is down); ``sqlite_server`` only on SQLite; ``server_factory`` starts servers
with custom settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

__all__ = ["LiveServer", "live_server", "server_factory", "sqlite_server", "start_server"]


@dataclasses.dataclass
class LiveServer:
    """A running server with one organization, project and token ready for use."""

    url: str
    token: str
    organization: str
    project: str
    store_url: str
    app: Any
    settings: Any

    @property
    def tasks_url(self) -> str:
        return f"{self.url}/api/{self.organization}/{self.project}/tasks/"

    def headers(self, token: str | None = None, scheme: str = "Token") -> dict[str, str]:
        return {"Authorization": f"{scheme} {token or self.token}"}

    def new_org_token(self, organization: str = "other-org", project: str = "default") -> str:
        """A token of another organization (created with its project)."""
        with self.app.store.transaction() as tx:
            tx.ensure_project(organization, project)
            return str(tx.create_token(organization))

    def create_user(self, username: str, password: str, organization: str | None = None) -> int:
        with self.app.store.transaction() as tx:
            return int(tx.create_user(username, password, organization or self.organization))


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, woken when told to stop: its own loop looks every 0.1 s, which a suite that starts
        and stops hundreds of servers pays hundreds of times."""

        wake: asyncio.Event | None = None
        loop: asyncio.AbstractEventLoop | None = None

        async def main_loop(self) -> None:
            self.loop, self.wake = asyncio.get_running_loop(), asyncio.Event()
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 1) % 864000
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 0.1)

        def stop_soon(self) -> None:
            self.should_exit = True
            loop, wake = self.loop, self.wake
            if loop is not None and wake is not None:
                with contextlib.suppress(RuntimeError):  # the loop has ended already
                    loop.call_soon_threadsafe(wake.set)

    return Server


class _Running:
    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    def stop(self) -> None:
        self.server.stop_soon()
        self.thread.join(15)


def start_server(store_url: str, parser: str = "auto", **settings: Any) -> tuple[LiveServer, Callable[[], None]]:
    """Start a server on a fresh store (organization ``acme``, project ``web``); returns it and a stop
    function. ``parser``: uvicorn's HTTP parser (``auto``, ``httptools``, ``h11``); ``settings`` are
    :class:`taskreport.server.ServerSettings` fields."""

    from taskreport.cli._serve import bind_socket
    from taskreport.server import ServerSettings, create_app, uvicorn_config

    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    options: dict[str, Any] = {
        "base_url": f"http://127.0.0.1:{port}",
        "bind_url": f"http://127.0.0.1:{port}",
        "sweep_interval": 0,
        "delivery_interval": 0.05,
        "token_cache_seconds": 0,
    }
    options.update(settings)
    config_settings = ServerSettings(store_url=store_url, **options)
    app = create_app(config_settings)
    with app.store.transaction() as tx:
        tx.ensure_project("acme", "web")
        token = tx.create_token("acme", name="fixture")
    # a server in a thread has no signal handlers, so the dashboard's open streams never hear that it stops
    # (under `taskreport serve` they do) and uvicorn would wait for them to end: a second is enough to let
    # every other request finish
    config = uvicorn_config(app, parser, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    server = _server_class()(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    running = _Running(server, thread)

    def stop() -> None:
        running.stop()
        sock.close()

    live = LiveServer(
        url=f"http://127.0.0.1:{port}",
        token=token,
        organization="acme",
        project="web",
        store_url=store_url,
        app=app,
        settings=config_settings,
    )
    return live, stop


@pytest.fixture
def server_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., LiveServer]]:
    """``server_factory(backend="sqlite", **settings)`` starts a server, stopped after the test."""

    def factory(backend: str = "sqlite", **settings: Any) -> LiveServer:
        store_url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url"))
        live, stop = start_server(store_url, **settings)
        # registered after the store fixture's teardown, so it runs before it: the server stops before its
        # database is dropped
        request.node.addfinalizer(stop)
        return live

    yield factory


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def live_server(request: pytest.FixtureRequest, server_factory: Callable[..., LiveServer]) -> LiveServer:
    """A real server, once on SQLite and once on PostgreSQL."""
    return server_factory(request.param)


@pytest.fixture
def sqlite_server(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory("sqlite")
