"""The dashboard's ASGI app: routing, sessions, CSRF checks, rendering and security headers.

Mounted at ``/`` beside the API (``/api``) by the task server. Pages are rendered on the server (Jinja2);
the live parts are Server-Sent Events (sse-starlette) from the process's one :class:`ChangeFeed`. The
handlers themselves are in ``_pages``.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from ..._errors import NotFound, RateLimited, TaskReportError, ValidationError
from ..._store import Row
from ..._store import Scope as ProjectScope
from ..._store._dashboard import SessionUser, secret, session_user, user_projects
from .._request import read_body
from .._responses import error_response
from . import _views
from ._feed import ChangeFeed
from ._security import LOGIN_COOKIE, SESSION_COOKIE, Keys

logger = logging.getLogger("taskreport.server.dashboard")

#: a session lasts this long from sign-in
SESSION_SECONDS = 14 * 86400
#: how long the secret read from the store is trusted before it is read again (a rotation takes this long)
SECRET_SECONDS = 60.0
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self';"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Handler = Callable[["Dashboard", Request], Awaitable[Response]]


class Forbidden(TaskReportError):
    status_code = 403
    default_code = "permission_denied"


class SignInNeeded(Exception):
    """A page for signed-in users only, asked for without a session."""


class Dashboard:
    """The dashboard of one task server (``server``: its :class:`~taskreport.server.TaskServer`)."""

    def __init__(self, server: Any, *, feed_interval: float = 0.5, feed_lookback: float = 5.0,
                 session_seconds: float = SESSION_SECONDS, stream_seconds: float | None = None) -> None:  # fmt: skip
        from . import _pages

        self.session_seconds = session_seconds
        self.stream_seconds = _pages.STREAM_SECONDS if stream_seconds is None else stream_seconds
        self.server = server
        self.api = server.api
        self.store = server.store
        self.settings = server.settings
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("taskreport.server.dashboard", "templates"),
            autoescape=jinja2.select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(
            iso=_views.iso,
            shown_time=_views.shown_time,
            duration=_views.duration,
            percent=_views.percent,
            progress_text=_views.progress_text,
            status_label=_views.status_label,
        )
        self.feed = ChangeFeed(self.store, interval=feed_interval, lookback=feed_lookback)
        # made (or read) now, so that the API's task links can be signed from the first request on
        self._keys = self._load_keys()
        self._keys_read = time.monotonic()
        # the API's task JSON (and webhook payloads) point public_url at the public page
        self.api.public_link = self.public_url
        server.deliverer.public_link = self.public_url
        routes: list[BaseRoute] = [
            Mount("/static", app=StaticFiles(packages=[("taskreport.server.dashboard", "static")]), name="static"),
            *(Route(path, self._endpoint(handler), methods=methods) for path, handler, methods in _pages.ROUTES),
        ]
        self.router = Router(routes, redirect_slashes=False, default=self._not_found)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.router(scope, receive, send)

    # -- keys --------------------------------------------------------------------------------------
    def _load_keys(self) -> Keys:
        with self.store.transaction() as tx:
            return Keys(secret(tx))

    async def keys(self) -> Keys:
        if time.monotonic() - self._keys_read > SECRET_SECONDS:
            value = await self.api.read(lambda tx: tx.cur.scalar("SELECT value FROM dashboard_secrets WHERE name = ?",
                                                                 ("dashboard",)))  # fmt: skip
            if value is None:  # rotated away and not made again yet
                value = await self.api.write(secret)
            self._keys = Keys(str(value))
            self._keys_read = time.monotonic()
        return self._keys

    def public_url(self, base: str, task: Row) -> str:
        return f"{base}/public/{self._keys.public_token(str(task['id']))}"

    # -- requests ----------------------------------------------------------------------------------
    def _endpoint(self, handler: Handler) -> _Endpoint:
        return _Endpoint(self, handler)

    async def handle(self, handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        started = time.perf_counter()
        try:
            response = await handler(self, request)
        except SignInNeeded:
            response = self.to_sign_in(request)
        except RateLimited as exc:
            response = self.error_page(request, 429, "Too many attempts", str(exc.detail))
            if exc.retry_after is not None:
                response.headers["Retry-After"] = str(int(exc.retry_after))
        except TaskReportError as exc:
            status = exc.status_code or 500
            title = {403: "Refused", 404: "Not found"}.get(status, "That did not work")
            response = self.error_page(request, status, title, str(exc.detail))
        except Exception:
            logger.exception("taskreport dashboard: %s %s failed", request.method, request.url.path)
            response = self.error_page(request, 500, "Server error", "Something went wrong on the server.")
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        await response(scope, receive, send)

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        if "text/html" not in request.headers.get("accept", ""):
            # not a browser (a client with a wrong base path...): the API's 404
            await error_response(NotFound("Not found."))(scope, receive, send)
            return
        response: Response = self.error_page(request, 404, "Not found", "There is no page here.")
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        await response(scope, receive, send)

    def root(self, request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def secure(self, request: Request) -> bool:
        base = self.settings.base_url or ""
        return request.url.scheme == "https" or base.startswith("https://")

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("root", self.root(request))
        context.setdefault("user", None)
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status)

    def error_page(self, request: Request, status: int, title: str, detail: str) -> HTMLResponse:
        return self.render(request, "error.html", status, title=title, detail=detail)

    def to_sign_in(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        query = urllib.parse.urlencode({"next": target})
        return RedirectResponse(f"{self.root(request)}/login?{query}", status_code=303)

    # -- who is asking -----------------------------------------------------------------------------
    async def session(self, request: Request) -> tuple[SessionUser, str] | None:
        """The signed-in user and the session's key, or None."""
        keys = await self.keys()
        key = keys.session_key(request.cookies.get(SESSION_COOKIE), SESSION_SECONDS)
        if key is None:
            return None
        found = await self.api.read(lambda tx: session_user(tx, key))
        return None if found is None else (found, key)

    async def signed_in(self, request: Request) -> SessionUser:
        found = await self.session(request)
        if found is None:
            raise SignInNeeded()
        return found[0]

    async def projects(self, user: SessionUser) -> list[Row]:
        rows: list[Row] = await self.api.read(lambda tx: user_projects(tx, user.user_id))
        return rows

    async def project(self, request: Request, user: SessionUser) -> tuple[ProjectScope, list[Row]]:
        """The path's project, if one of the user's organizations owns it (404 alike otherwise)."""
        org, slug = request.path_params["org"], request.path_params["project"]
        projects = await self.projects(user)
        for row in projects:
            if row["organization"] == org and row["project"] == slug:
                scope = ProjectScope(int(row["organization_id"]), org, int(row["project_id"]), slug)
                return scope, projects
        raise NotFound("There is no such project, or it is not one of yours.")

    # -- CSRF --------------------------------------------------------------------------------------
    def check_origin(self, request: Request) -> None:
        """A browser names the page a form was sent from: it must be this server."""
        origin = request.headers.get("origin")
        if origin is None or (origin == "null" and request.headers.get("sec-fetch-site") == "same-origin"):
            return
        own = f"{request.url.scheme}://{request.url.netloc}"
        allowed = {own}
        if self.settings.base_url:
            allowed.add(self.settings.base_url.rstrip("/"))
        if origin not in allowed:
            raise Forbidden("This form was sent from another site.")

    async def form(self, request: Request, binding: str | None) -> dict[str, str]:
        """The posted form, once its CSRF token is checked against ``binding`` (the session's key hash, or the
        sign-in nonce)."""
        self.check_origin(request)
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        limit = self.settings.max_body_bytes
        length = request.headers.get("content-length")
        if length and length.isascii() and length.isdigit() and (len(length) > 18 or int(length) > limit):
            raise Forbidden("The form is too large.")
        raw = await read_body(request, limit=limit, timeout=self.settings.read_timeout)
        values: dict[str, str] = {}
        if media == "application/x-www-form-urlencoded":
            try:
                pairs = urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True, max_num_fields=50)
            except (UnicodeDecodeError, ValueError):
                raise ValidationError("The form could not be read.") from None
            values = dict(pairs)
        keys = await self.keys()
        if not keys.csrf_ok(values.get("csrf"), binding):
            raise Forbidden("The form has expired or did not come from this site: reload the page and try again.")
        return values

    def login_nonce(self, request: Request) -> str | None:
        return request.cookies.get(LOGIN_COOKIE)


class _Endpoint:
    """One route's ASGI app (a class, so that Starlette passes it scope, receive and send)."""

    def __init__(self, dashboard: Dashboard, handler: Handler) -> None:
        self.dashboard = dashboard
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.dashboard.handle(self.handler, scope, receive, send)


def dashboard_mount(server: Any) -> Mount:
    """The dashboard as a mount of the task server's router, at ``/``."""
    return Mount("/", app=Dashboard(server))
