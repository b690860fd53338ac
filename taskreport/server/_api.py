"""What the endpoints share: settings, the store (reads in the thread pool, writes through the group-commit
writer), credentials and rate limits, and each request's project."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from .._config import parse_project_key
from .._errors import NotFound
from .._store import TOKEN_PREFIX, Scope, Store, TaskRow, TokenInfo, Tx
from ._auth import RateLimiter, TokenCache, authentication_failed, token_from_header
from ._progress import ProgressLane
from ._request import Ctx, decode_body, read_body
from ._settings import ServerSettings
from ._writer import Progress, Touches, Writer

T = TypeVar("T")
#: base URLs remembered (see Api.base_of)
_MAX_BASES = 64


class Api:
    """The state and helpers every endpoint uses; one per server."""

    def __init__(self, settings: ServerSettings, store: Store, writer: Writer, start: Callable[[], None]) -> None:
        self.settings = settings
        self.store = store
        self.writer = writer
        self._start = start
        progress = store.async_progress if settings.loop_progress else None
        self.lane = None if progress is None else ProgressLane(store, progress, max_batch=settings.max_batch)
        self.tokens = TokenCache(settings.token_cache_seconds)
        self.limiter = RateLimiter(settings.rate_limit) if settings.rate_limit else None
        self.login_limiter = RateLimiter(settings.login_rate_limit) if settings.login_rate_limit else None
        self._scopes: dict[tuple[str, str], Scope] = {}
        self._bases: dict[tuple[Any, ...], str] = {}
        #: (base, task row) -> the task's public page (set by the dashboard); None: the API URL
        self.public_link: Callable[[str, Any], str] | None = None

    def base_of(self, request: Request) -> str:
        """The base URL a request's links start with (scheme, its Host, the app's root path), without a
        trailing slash. Remembered: Starlette builds it anew for each request, a tenth of what a small PATCH
        costs the server."""
        scope = request.scope
        host = next((value for name, value in scope["headers"] if name == b"host"), None)
        server = scope.get("server")  # a list under some servers (Starlette's TestClient): not hashable
        root = scope.get("app_root_path", scope.get("root_path"))
        key = (scope.get("scheme"), host, root, tuple(server) if server is not None else None)
        base = self._bases.get(key)
        if base is None:
            base = str(request.base_url).rstrip("/")
            if len(self._bases) >= _MAX_BASES:  # the Host header is the client's to choose: keep a few
                self._bases.clear()
            self._bases[key] = base
        return base

    async def read(self, read: Callable[[Tx], T]) -> T:
        """``read(tx)`` in a read transaction, in the thread pool: reads never wait for the writer."""

        def run() -> T:
            with self.store.transaction(write=False) as tx:
                return read(tx)

        return await run_in_threadpool(run)

    async def write(self, write: Callable[[Tx], T], progress: Progress | None = None,
                    touches: Touches | None = None) -> T:  # fmt: skip
        """``write(tx)`` in the writer's next batch (a 503 once the server is stopping); ``progress`` and
        ``touches`` (the one task it changes): see :meth:`Writer.run`."""
        self._start()
        return await self.writer.run(write, progress, touches)

    async def write_progress(self, progress: Progress) -> TaskRow | None:
        """A progress update written from the event loop (PostgreSQL), the task as written; None when it was
        not (SQLite, an unknown task, one with a live action, a failure): then :meth:`write` writes it."""
        if self.lane is None or self.writer.closed:
            return None
        self._start()
        return await self.lane.write(*progress)

    async def authenticate(self, request: Request) -> tuple[TokenInfo, tuple[str, str] | None]:
        """The credential's token, and the project it is limited to when it is a project key."""
        key = token_from_header(request.headers.get("authorization"))
        # a project key is base64 of org/project/token, and never a token: every token starts with "trk_",
        # whose "_" is not in base64's alphabet, so one lookup is enough either way
        parsed = None if key.startswith(TOKEN_PREFIX) else parse_project_key(key)
        key_project = None
        if parsed is not None:
            key_project, key = parsed[:2], parsed[2]
        digest, info = self.tokens.get(key)
        if info is None:
            info = await self.read(lambda tx: tx.token_info(key))
            if info is None:
                raise authentication_failed()
            self.tokens.put(digest, info)
        if self.limiter is not None:
            self.limiter.check(info.id)
        return info, key_project

    async def project(self, ctx: Ctx) -> Scope:
        """The path's project, if the token's organization owns it; 404 alike for every other case, so a
        token learns nothing about other organizations."""
        org, project = ctx.params["org"], ctx.params["project"]
        assert ctx.info is not None
        if org != ctx.info.organization:
            raise NotFound("Not found.")
        if ctx.key_project is not None and ctx.key_project != (org, project):
            raise NotFound("Not found.")
        scope = self._scopes.get((org, project))
        if scope is None:
            scope = await self.read(lambda tx: tx.get_scope(org, project))
            if scope is None:
                raise NotFound("Not found.")
            self._scopes[(org, project)] = scope
        return scope

    async def body(self, ctx: Ctx, *, form: bool = False) -> Any:
        """The request's decoded body (JSON, or with ``form`` an urlencoded form); ``{}`` when empty."""
        limit, timeout = self.settings.max_body_bytes, self.settings.read_timeout
        return decode_body(ctx.request, await read_body(ctx.request, limit=limit, timeout=timeout), form=form)

    def forget_tokens(self, digests: list[str]) -> None:
        for digest in digests:
            self.tokens.drop(digest)


def client_address(request: Request) -> Any:
    return request.client.host if request.client else ""
