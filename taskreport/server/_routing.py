"""Routing: Starlette's Router with the API mounted at ``/api`` (room for other mounts, a dashboard at ``/``).

Each route's endpoint runs the checks in the order Django REST framework runs them, so that a stock client
sees the same error for the same mistake: unknown path (404, the router's default), oversized body (413),
Accept (406), credentials (401), rate (429), method (405), then the body's media type (415) and content
(400), and last the objects themselves (404). Every path works with and without its trailing slash.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import Receive, Scope, Send

from .._errors import MethodNotAllowed, NotAcceptable, NotFound, RateLimited, TaskReportError
from ._api import Api, client_address
from ._auth import WWW_AUTHENTICATE
from ._request import Ctx, RequestTimeout, too_large
from ._responses import accepts, error_response, server_error_response

logger = logging.getLogger("taskreport.server")

Handler = Callable[[Api, Ctx], Awaitable[Response]]


@dataclasses.dataclass(frozen=True)
class Resource:
    """What a path offers: a handler per method, and which of the shared checks apply."""

    methods: Mapping[str, Handler]
    #: no credentials needed
    public: bool = False
    #: the Accept check (the schema negotiates its own media types)
    negotiate: bool = True
    #: limited per client address (logins: there is no token yet)
    per_address: bool = False


class NotAllowed(MethodNotAllowed):
    def __init__(self, method: str, allowed: Sequence[str]) -> None:
        # the seed's detail: curly quotes, method in lower case
        super().__init__(f"Method \u201c{method.lower()}\u201d not allowed.")
        self.allow = ", ".join(allowed)


def error_headers(exc: TaskReportError) -> dict[str, str] | None:
    if exc.status_code == 401:
        return WWW_AUTHENTICATE
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return {"Retry-After": str(int(exc.retry_after))}
    if isinstance(exc, NotAllowed):
        return {"Allow": exc.allow}
    if isinstance(exc, RequestTimeout):
        # the rest of the body may still come: it can not be told from a next request
        return {"Connection": "close"}
    return None


class Endpoint:
    """The ASGI app of one route: the shared checks, then the method's handler."""

    def __init__(self, api: Api, resource: Resource) -> None:
        self.api = api
        self.resource = resource

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.dispatch(request)
        except TaskReportError as exc:
            response = error_response(exc, error_headers(exc))
        except ClientDisconnect:
            # the client went away before its request was read: nothing to answer, nothing went wrong here
            logger.debug("taskreport server: %s %s: the client disconnected", request.method, request.url.path)
            return
        except Exception:
            logger.exception("taskreport server: %s %s failed", request.method, request.url.path)
            response = server_error_response()
        await response(scope, receive, send)

    async def dispatch(self, request: Request) -> Response:
        api, resource = self.api, self.resource
        limit = api.settings.max_body_bytes
        length = request.headers.get("content-length")
        if length and length.isascii() and length.isdigit() and (len(length) > 18 or int(length) > limit):
            raise too_large(limit)
        # a response's links may follow its own request's Host: they go back to that sender only
        ctx = Ctx(request, api.settings.base_url or api.base_of(request))
        if resource.negotiate and accepts(request.headers.get("accept")) is None:
            raise NotAcceptable("Could not satisfy the request Accept header.")
        if not resource.public:
            ctx.info, ctx.key_project = await api.authenticate(request)
        elif resource.per_address and api.login_limiter is not None:
            api.login_limiter.check(client_address(request))
        method = "GET" if ctx.method == "HEAD" and "GET" in resource.methods else ctx.method
        handler = resource.methods.get(method)
        if handler is None:
            raise NotAllowed(ctx.method, list(resource.methods))
        return await handler(api, ctx)


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await error_response(NotFound("Not found."))(scope, receive, send)


def build_router(api: Api, routes: Mapping[str, Resource], mounts: Sequence[BaseRoute] = ()) -> Router:
    """``routes``: path under ``/api`` → resource, each also served with a trailing slash. ``mounts`` come
    after the API (a ``Mount("/", app)`` takes every other path)."""
    api_routes: list[BaseRoute] = []
    for path, resource in routes.items():
        route = Route(path, Endpoint(api, resource))
        # one route takes both forms (two routes cost a miss each for every request to the routes after them)
        assert route.path_regex.pattern.endswith("$"), "Starlette's route pattern changed: the slash needs another way"
        route.path_regex = re.compile(route.path_regex.pattern.removesuffix("$") + "/?$")
        api_routes.append(route)
    inner = Router(api_routes, redirect_slashes=False, default=not_found)
    return Router([Mount("/api", app=inner), *mounts], redirect_slashes=False, default=not_found)
