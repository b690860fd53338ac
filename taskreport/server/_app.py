"""The ASGI application: the routes of the task API, and the background work (group-commit writer, webhook and
email deliverer, sweeper) that runs between the ASGI lifespan's startup and shutdown.

Every response carries ``X-Taskreport-Features: batch, refs``, so that a client can tell this server (and what
it offers beyond the task API) from a stock one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute
from starlette.types import Message, Receive, Scope, Send

from .._store import Store, open_store, scrypt_n
from ._api import Api
from ._api_batch import BATCH
from ._api_service import AUTHENTICATE, PING, SCHEMA, USER
from ._api_tasks import ACTION, ACTIONS, TASK, TASKS
from ._delivery import Deliverer
from ._routing import Resource, build_router
from ._schema import FEATURES
from ._settings import ServerSettings
from ._sweeper import sweep_forever
from ._writer import Writer
from .dashboard import dashboard_mount

logger = logging.getLogger("taskreport.server")

FEATURES_HEADER = (b"x-taskreport-features", ", ".join(FEATURES).encode())
_PROJECT = "/{org}/{project}/tasks"
#: the API's paths under /api, in the order the router tries them: the commonest requests by far (a task's
#: PATCH, a batch, a create) first, ping before them (it is what health checks poll); "batch" comes before
#: "{task}" (no task id is "batch")
ROUTES: dict[str, Resource] = {
    "/ping": PING,
    _PROJECT + "/batch": BATCH,
    _PROJECT + "/{task}": TASK,
    _PROJECT: TASKS,
    _PROJECT + "/{task}/actions": ACTIONS,
    _PROJECT + "/{task}/actions/{action}": ACTION,
    "/schema": SCHEMA,
    "/authenticate": AUTHENTICATE,
    "/users/{user:int}": USER,
}


class TaskServer:
    """The task service as an ASGI app. ``mounts`` are served beside the API (which is mounted at ``/api``):
    a ``starlette.routing.Mount("/", dashboard)`` takes every other path."""

    def __init__(self, settings: ServerSettings, store: Store | None = None, *, mounts: Sequence[BaseRoute] = ()):
        self.settings = settings
        scrypt_n()  # a bad TASKREPORT_SCRYPT_N stops the server here, not at the first sign-in
        self.store = store or open_store(settings.store_url, pool_size=settings.db_pool_size)
        self.deliverer = Deliverer(self.store, settings, self.delivery_base)
        threads = min(settings.writer_threads, max(1, settings.db_pool_size - 2))
        self.writer = Writer(
            self.store,
            max_batch=settings.max_batch,
            on_commit=self.deliverer.wake,
            threads=threads if self.store.dialect == "postgresql" else 1,
        )
        self.api = Api(settings, self.store, self.writer, self.start)
        self.router = build_router(self.api, ROUTES, [*mounts, dashboard_mount(self)])
        self._sweeper: asyncio.Task[None] | None = None
        self._started = False
        # once shut down, never started again by a late request: its write gets a 503 instead
        self._shut_down = False

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if not self._started and not self._shut_down:
            self._started = True
            self.writer.start()
            self.deliverer.start()

    async def startup(self) -> None:
        self.start()
        if self.settings.sweep_interval > 0:
            self._sweeper = asyncio.create_task(sweep_forever(self.writer, self.settings.sweep_interval))

    async def shutdown(self) -> None:
        self._shut_down = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        # stopped even if never started, so that writes queued or made from now on are answered with a 503
        await run_in_threadpool(self.writer.stop)
        if self._started:
            await run_in_threadpool(self.deliverer.stop)
            self._started = False
        self.store.close()

    def delivery_base(self) -> str:
        # never from a request: its Host header is the sender's to choose, before any authentication
        return self.settings.base_url or self.settings.bind_url or "http://127.0.0.1"

    # -- ASGI --------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return

        async def send_with_features(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), FEATURES_HEADER]}
            await send(message)

        await self.router(scope, receive, send_with_features)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("taskreport server: startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: ServerSettings, *, mounts: Sequence[BaseRoute] = ()) -> TaskServer:
    return TaskServer(settings, mounts=mounts)
