"""The ASGI application: routing, content negotiation, authentication and the task and action endpoints.

Checks run in the order Django REST framework runs them, so that a stock client sees the same error for
the same mistake: unknown path (404), oversized body (413), Accept (406), credentials (401), rate (429),
method (405), then the body's media type (415) and content (400), and last the objects themselves (404).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._config import parse_project_key
from .._errors import (
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    TaskReportError,
    UnsupportedMediaType,
    ValidationError,
)
from .._store import Row, Store, TokenInfo, Tx, open_store
from .._store import Scope as ProjectScope
from .._store._triggers import check_action
from .._validation import validate_action, validate_task
from ._auth import WWW_AUTHENTICATE, RateLimiter, TokenCache, authentication_failed, token_from_header
from ._delivery import Deliverer
from ._responses import (
    JSON_TYPE,
    accepts,
    error_response,
    is_json_type,
    json_response,
    media_type,
    render_action,
    render_task,
    server_error_response,
)
from ._settings import ServerSettings
from ._sweeper import sweep_forever
from ._writer import Writer

logger = logging.getLogger("taskreport.server")

_SEG = r"[^/]+"
_PROJECT = rf"^/api/(?P<org>{_SEG})/(?P<project>{_SEG})/tasks"
#: (pattern, handler name, methods); every path matches with or without its trailing slash
_ROUTES: list[tuple[re.Pattern[str], str, tuple[str, ...]]] = [
    (re.compile(r"^/api/ping/?$"), "ping", ("GET",)),
    (re.compile(r"^/api/schema/?$"), "schema", ("GET",)),
    (re.compile(r"^/api/authenticate/?$"), "authenticate", ("POST",)),
    (re.compile(r"^/api/users/(?P<user>\d+)/?$"), "user", ("GET",)),
    (re.compile(_PROJECT + r"/?$"), "tasks", ("GET", "POST")),
    (re.compile(_PROJECT + rf"/(?P<task>{_SEG})/?$"), "task", ("GET", "PUT", "PATCH", "DELETE")),
    (re.compile(_PROJECT + rf"/(?P<task>{_SEG})/actions/?$"), "actions", ("GET", "POST")),
    (
        re.compile(_PROJECT + rf"/(?P<task>{_SEG})/actions/(?P<action>{_SEG})/?$"),
        "action",
        ("GET", "PUT", "PATCH", "DELETE"),
    ),
]
_PUBLIC = frozenset({"ping", "schema", "authenticate"})
_SCHEMA_TYPES = ("application/vnd.oai.openapi", "application/yaml", JSON_TYPE, "application/vnd.oai.openapi+json")
_FORM_TYPE = "application/x-www-form-urlencoded"
#: how deeply a request body may nest lists and objects
MAX_JSON_DEPTH = 100
#: the name of the tokens ``POST /api/authenticate/`` issues
_LOGIN_TOKEN = "authenticate"


class _NotAllowed(MethodNotAllowed):
    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        # the seed's detail: curly quotes, method in lower case
        super().__init__(f"Method \u201c{method.lower()}\u201d not allowed.")
        self.allow = ", ".join(allowed)


def _error_headers(exc: TaskReportError) -> dict[str, str] | None:
    if exc.status_code == 401:
        return WWW_AUTHENTICATE
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return {"Retry-After": str(int(exc.retry_after))}
    if isinstance(exc, _NotAllowed):
        return {"Allow": exc.allow}
    return None


def _route(path: str) -> tuple[str, tuple[str, ...], dict[str, str]]:
    for pattern, route, methods in _ROUTES:
        match = pattern.match(path)
        if match:
            return route, methods, match.groupdict()
    raise NotFound("Not found.")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _too_deep(data: Any, limit: int) -> bool:
    """Whether ``data`` nests lists and objects more than ``limit`` levels deep (walked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _parse_json(body: bytes) -> Any:
    too_deep = f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep"
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise ValidationError(f"JSON parse error - {exc}", code="parse_error") from None
    except RecursionError:
        # the parser recurses once per level: a body of [[[[... is the sender's error, not ours
        raise ValidationError(too_deep, code="parse_error") from None
    # a body the parser just managed could still exhaust the stack later, when validated, stored or rendered
    if _too_deep(data, MAX_JSON_DEPTH):
        raise ValidationError(too_deep, code="parse_error")
    return data


def _expect_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError(
            f'Expected a dictionary of items but got type "{type(data).__name__}".',
            code="not_a_dict",
            attr="non_field_errors",
        )
    return data


def _task_fields(data: Any, *, partial: bool) -> dict[str, Any]:
    fields = validate_task(_expect_object(data), partial=partial, unknown="ignore")
    for i, action in enumerate(fields.get("actions") or ()):
        check_action(action, prefix=f"actions.{i}.")
    return fields


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key") or None
    if key is not None and len(key) > 255:
        raise ValidationError("must have at most 255 characters.", attr="Idempotency-Key")
    return key


class Ctx:
    """One request, once routed and authenticated."""

    __slots__ = ("base", "info", "key_project", "method", "params", "request", "route")

    def __init__(self, request: Request, route: str, params: dict[str, str], base: str) -> None:
        self.request = request
        self.route = route
        self.params = params
        self.base = base
        self.method = request.method
        self.info: TokenInfo | None = None
        #: (organization, project) when the credential was a project key: it is good for that project only
        self.key_project: tuple[str, str] | None = None


class TaskServer:
    """The task service as an ASGI app. Its background work (writer, deliverer, sweeper) runs between the
    ASGI lifespan's startup and shutdown."""

    def __init__(self, settings: ServerSettings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or open_store(settings.store_url)
        self.deliverer = Deliverer(self.store, settings, self._delivery_base)
        self.writer = Writer(self.store, max_batch=settings.max_batch, on_commit=self.deliverer.wake)
        self.tokens = TokenCache(settings.token_cache_seconds)
        self.limiter = RateLimiter(settings.rate_limit) if settings.rate_limit else None
        self.login_limiter = RateLimiter(settings.login_rate_limit) if settings.login_rate_limit else None
        self._scopes: dict[tuple[str, str], ProjectScope] = {}
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

    def _delivery_base(self) -> str:
        # never from a request: its Host header is the sender's to choose, before any authentication
        return self.settings.base_url or self.settings.bind_url or "http://127.0.0.1"

    # -- ASGI --------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            response = await self.dispatch(request)
        except TaskReportError as exc:
            response = error_response(exc, _error_headers(exc))
        except Exception:
            logger.exception("taskreport server: %s %s failed", request.method, request.url.path)
            response = server_error_response()
        await response(scope, receive, send)

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

    # -- dispatch ----------------------------------------------------------------------------------
    async def dispatch(self, request: Request) -> Response:
        route, methods, params = _route(request.scope["path"])
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.settings.max_body_bytes:
            raise self._too_large()
        # a response's links may follow its own request's Host: they go back to that sender only
        base = self.settings.base_url or str(request.base_url).rstrip("/")
        ctx = Ctx(request, route, params, base)
        if route == "schema":
            return await self.schema(ctx, methods)
        if accepts(request.headers.get("accept")) is None:
            raise NotAcceptable("Could not satisfy the request Accept header.")
        if route not in _PUBLIC:
            ctx.info, ctx.key_project = await self._authenticate(request)
        elif route == "authenticate" and self.login_limiter is not None:
            # per address, since there is no token yet: every attempt runs scrypt, and guesses must be slow
            self.login_limiter.check(request.client.host if request.client else "")
        method = "GET" if ctx.method == "HEAD" else ctx.method
        if method not in methods:
            raise _NotAllowed(ctx.method, methods)
        handler: Callable[[Ctx], Awaitable[Response]] = getattr(self, f"{route}_{method.lower()}")
        return await handler(ctx)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"Request body is larger than {self.settings.max_body_bytes} bytes.")

    async def _authenticate(self, request: Request) -> tuple[TokenInfo, tuple[str, str] | None]:
        """The credential's token, and the project it is limited to when it is a project key."""
        key = token_from_header(request.headers.get("authorization"))
        # a project key is base64 of org/project/token, and never a token: every token starts with "trk_",
        # whose "_" is not in base64's alphabet, so one lookup is enough either way
        parsed = parse_project_key(key)
        key_project = None
        if parsed is not None:
            key_project, key = parsed[:2], parsed[2]
        digest, info = self.tokens.get(key)
        if info is None:
            info = await run_in_threadpool(self._lookup_token, key)
            if info is None:
                raise authentication_failed()
            self.tokens.put(digest, info)
        if self.limiter is not None:
            self.limiter.check(info.id)
        return info, key_project

    def _lookup_token(self, key: str) -> TokenInfo | None:
        with self.store.transaction(write=False) as tx:
            return tx.token_info(key)

    async def _project(self, ctx: Ctx) -> ProjectScope:
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
            scope = await self._read(lambda tx: tx.get_scope(org, project))
            if scope is None:
                raise NotFound("Not found.")
            self._scopes[(org, project)] = scope
        return scope

    async def _read(self, read: Callable[[Tx], Any]) -> Any:
        def run() -> Any:
            with self.store.transaction(write=False) as tx:
                return read(tx)

        return await run_in_threadpool(run)

    async def _write(self, write: Callable[[Tx], Any]) -> Any:
        if not self._started:
            self.start()
        return await self.writer.run(write)

    async def _body(self, request: Request, *, form: bool = False) -> Any:
        """The request's JSON body (or, with ``form``, an urlencoded form as a dict); ``{}`` when empty.

        Only an empty body stands for ``{}``: a JSON ``null``, ``[]``, ``0`` or ``""`` is what the client
        sent, refused by the endpoints as not an object."""
        limit = self.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise self._too_large()
            chunks.append(chunk)
        body = b"".join(chunks)
        if not body:
            return {}
        content_type = request.headers.get("content-type", "")
        if is_json_type(content_type):
            return _parse_json(body)
        if form and media_type(content_type) == _FORM_TYPE:
            try:
                pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
            except UnicodeDecodeError:
                raise ValidationError("Form parse error - not UTF-8.", code="parse_error") from None
            return dict(pairs)
        raise UnsupportedMediaType(f"Unsupported media type \u201c{content_type.strip()}\u201d in request.")

    # -- endpoints: service ------------------------------------------------------------------------
    async def ping_get(self, ctx: Ctx) -> Response:
        return json_response({"status": "ok"})

    async def schema(self, ctx: Ctx, methods: tuple[str, ...]) -> Response:
        if ctx.method not in ("GET", "HEAD"):
            raise _NotAllowed(ctx.method, methods)
        wanted = ctx.request.query_params.get("format")
        if wanted is None:
            chosen = accepts(ctx.request.headers.get("accept"), _SCHEMA_TYPES)
            if chosen is None:
                raise NotAcceptable("Could not satisfy the request Accept header.")
            as_json = chosen.endswith("json")
        elif wanted in ("json", "yaml", "openapi"):
            as_json = wanted == "json"
        else:
            raise NotFound("Not found.")
        name = "openapi.json" if as_json else "openapi.yaml"
        data = resources.files("taskreport.server").joinpath(name).read_bytes()
        kind = "application/vnd.oai.openapi+json" if as_json else "application/vnd.oai.openapi"
        return Response(data, media_type=kind + "; charset=utf-8")

    async def authenticate_post(self, ctx: Ctx) -> Response:
        data = _expect_object(await self._body(ctx.request, form=True))
        for field in ("username", "password"):
            if not isinstance(data.get(field), str) or not data[field]:
                raise ValidationError("This field is required.", attr=field, code="required")
        user = await self._read(lambda tx: tx.authenticate_user(data["username"], data["password"]))
        if user is None:
            raise authentication_failed()

        def issue(tx: Tx) -> tuple[list[str], str, list[str]]:
            accounts = tx.organization_slugs(user["id"])
            if not accounts:
                raise authentication_failed("User has no organization.")
            token = tx.create_token(accounts[0], user_id=user["id"], name=_LOGIN_TOKEN)
            # tokens are stored hashed, so a login can not hand back an earlier one: each login makes a new
            # one and the oldest beyond the cap are revoked, so that logins in a loop do not pile up keys
            live = tx.cur.all(
                "SELECT id, key_hash FROM tokens WHERE user_id = ? AND name = ? AND revoked IS NULL ORDER BY id DESC",
                (user["id"], _LOGIN_TOKEN),
            )
            old = live[max(1, self.settings.login_tokens_per_user) :]
            for row in old:
                tx.revoke_token(row["id"])
            return accounts, token, [row["key_hash"] for row in old]

        accounts, token, revoked = await self._write(issue)
        for digest in revoked:
            self.tokens.drop(digest)
        body = {
            "account": accounts[0],
            "token": token,
            "accounts": accounts,
            "user": f"{ctx.base}/api/users/{user['id']}/",
        }
        return json_response(body)

    async def user_get(self, ctx: Ctx) -> Response:
        assert ctx.info is not None
        user_id = int(ctx.params["user"])
        if ctx.info.user_id != user_id:
            raise NotFound("Not found.")

        def read(tx: Tx) -> Row | None:
            row = tx.cur.one("SELECT id, username FROM users WHERE id = ?", (user_id,))
            if row is not None:
                row["accounts"] = tx.organization_slugs(user_id)
            return row

        row = await self._read(read)
        if row is None:
            raise NotFound("Not found.")
        return json_response({"id": row["id"], "username": row["username"], "accounts": row["accounts"]})

    # -- endpoints: tasks --------------------------------------------------------------------------
    async def tasks_get(self, ctx: Ctx) -> Response:
        scope = await self._project(ctx)
        query = ctx.request.query_params
        # the store checks the filters (a ValidationError naming the attr): the same rules as embedded use
        filters: dict[str, Any] = {}
        statuses = [value for value in query.getlist("status") if value.strip()]
        if statuses:
            filters["status"] = statuses
        for name in ("name", "parent", "external_id", "ref"):
            if name in query:
                filters[name] = query[name]
        tags = query.getlist("tag")
        if tags:
            filters["tag"] = tags
        page_size: int | None = None
        if query.get("page_size"):
            raw = query["page_size"]
            if not raw.isdigit() or int(raw) < 1:
                raise ValidationError("A valid positive integer is required.", attr="page_size")
            page_size = int(raw)
        cursor = query.get("cursor") or None
        page = await self._read(lambda tx: tx.list_tasks(scope, cursor=cursor, page_size=page_size, **filters))
        return json_response(
            {
                "next": self._page_url(ctx, page.next_cursor),
                "previous": self._page_url(ctx, page.previous_cursor),
                "results": [render_task(row, ctx.base) for row in page.results],
            }
        )

    def _page_url(self, ctx: Ctx, cursor: str | None) -> str | None:
        if cursor is None:
            return None
        items = [(k, v) for k, v in ctx.request.query_params.multi_items() if k != "cursor"]
        items.append(("cursor", cursor))
        return f"{ctx.base}{ctx.request.url.path}?{urllib.parse.urlencode(items)}"

    async def tasks_post(self, ctx: Ctx) -> Response:
        scope = await self._project(ctx)
        fields = _task_fields(await self._body(ctx.request), partial=False)
        key = _idempotency_key(ctx.request)
        row = await self._write(lambda tx: tx.create_task(scope, fields, idempotency_key=key))
        # a replay (the key was used before) answers with the task as it is, and says it made nothing
        return json_response(render_task(row, ctx.base), 200 if row.replayed else 201)

    async def task_get(self, ctx: Ctx) -> Response:
        scope = await self._project(ctx)
        task_id = ctx.params["task"]
        row = await self._read(lambda tx: tx.get_task(scope, task_id))
        return json_response(render_task(row, ctx.base))

    async def _update_task(self, ctx: Ctx, *, partial: bool) -> Response:
        scope = await self._project(ctx)
        fields = _task_fields(await self._body(ctx.request), partial=partial)
        task_id = ctx.params["task"]
        row = await self._write(lambda tx: tx.update_task(scope, task_id, fields))
        return json_response(render_task(row, ctx.base))

    async def task_put(self, ctx: Ctx) -> Response:
        return await self._update_task(ctx, partial=False)

    async def task_patch(self, ctx: Ctx) -> Response:
        return await self._update_task(ctx, partial=True)

    async def task_delete(self, ctx: Ctx) -> Response:
        scope = await self._project(ctx)
        task_id = ctx.params["task"]
        await self._write(lambda tx: tx.cancel_task(scope, task_id))
        return Response(status_code=204)

    # -- endpoints: actions ------------------------------------------------------------------------
    async def actions_get(self, ctx: Ctx) -> Response:
        scope = await self._project(ctx)
        task_id = ctx.params["task"]
        rows = await self._read(lambda tx: tx.list_actions(scope, task_id))
        return json_response([render_action(row) for row in rows])

    async def actions_post(self, ctx: Ctx) -> Response:
        scope = await self._project(ctx)
        fields = validate_action(_expect_object(await self._body(ctx.request)), partial=False)
        check_action(fields)
        task_id = ctx.params["task"]
        key = _idempotency_key(ctx.request)
        # a repeat with the same key answers with the action the first made (201 both times)
        row = await self._write(lambda tx: tx.create_action(scope, task_id, fields, idempotency_key=key))
        return json_response(render_action(row), 201)

    async def action_get(self, ctx: Ctx) -> Response:
        scope = await self._project(ctx)
        task_id, action_id = ctx.params["task"], ctx.params["action"]
        row = await self._read(lambda tx: tx.get_action(scope, task_id, action_id))
        return json_response(render_action(row))

    async def _update_action(self, ctx: Ctx, *, partial: bool) -> Response:
        scope = await self._project(ctx)
        fields = validate_action(_expect_object(await self._body(ctx.request)), partial=partial)
        task_id, action_id = ctx.params["task"], ctx.params["action"]

        def write(tx: Tx) -> Row:
            current = tx.get_action(scope, task_id, action_id)
            # the checks apply to the action as it will be, not to the fields alone
            check_action({k: current[k] for k in ("trigger", "integration", "config")} | fields)
            return tx.update_action(scope, task_id, action_id, fields)

        row = await self._write(write)
        return json_response(render_action(row))

    async def action_put(self, ctx: Ctx) -> Response:
        return await self._update_action(ctx, partial=False)

    async def action_patch(self, ctx: Ctx) -> Response:
        return await self._update_action(ctx, partial=True)

    async def action_delete(self, ctx: Ctx) -> Response:
        scope = await self._project(ctx)
        task_id, action_id = ctx.params["task"], ctx.params["action"]
        await self._write(lambda tx: tx.cancel_action(scope, task_id, action_id))
        return Response(status_code=204)


def create_app(settings: ServerSettings) -> TaskServer:
    return TaskServer(settings)
