"""The dashboard's pages: sign in and out, a project's task list, a task's page with its actions, the public page
of a task, and the live streams of each."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ..._errors import NotFound, ValidationError
from ..._status import TERMINAL
from ..._store import Scope, Tx, hash_password
from ..._store import _dashboard as store
from ..._store._triggers import check_action
from ..._validation import validate_action
from .._api import client_address
from . import _views
from ._feed import RESYNC, Listener
from ._security import LOGIN_COOKIE, SESSION_COOKIE

if TYPE_CHECKING:
    import jinja2
    from starlette.responses import HTMLResponse

    from ..._store import Row
    from ..._store import Scope as ProjectScope
    from ..._store._dashboard import SessionUser
    from ._feed import ChangeFeed
    from ._security import Keys


class Dashboard(Protocol):
    """What the handlers use of the dashboard app (``_app.Dashboard``), which routes to them."""

    api: Any
    env: jinja2.Environment
    feed: ChangeFeed
    settings: Any
    session_seconds: float
    stream_seconds: float

    async def keys(self) -> Keys: ...

    def public_url(self, base: str, task: Row) -> str: ...

    def root(self, request: Request) -> str: ...

    def secure(self, request: Request) -> bool: ...

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse: ...

    async def session(self, request: Request) -> tuple[SessionUser, str] | None: ...

    async def signed_in(self, request: Request) -> SessionUser: ...

    async def projects(self, user: SessionUser) -> list[Row]: ...

    async def project(self, request: Request, user: SessionUser) -> tuple[ProjectScope, list[Row]]: ...

    async def form(self, request: Request, binding: str | None) -> dict[str, str]: ...

    def login_nonce(self, request: Request) -> str | None: ...

PAGE_SIZE = 50
#: a live stream is closed after this long (the browser opens another at once), so that a session that ended
#: or a server going away never holds a stream for ever
STREAM_SECONDS = 300.0
_RETRY_MS = 1000


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def _safe_next(root: str, target: str | None) -> str:
    # only a path on this site: never //host or a scheme
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return f"{root}/"
    return target


def _project_url(root: str, scope: Scope) -> str:
    return f"{root}/p/{scope.organization}/{scope.project}/"


# -- signing in and out ---------------------------------------------------------------------------------
async def home(d: Dashboard, request: Request) -> Response:
    user = await d.signed_in(request)
    projects = await d.projects(user)
    root = d.root(request)
    if not projects:
        return d.render(request, "error.html", 200, title="No projects", user=user,
                        detail="Your account belongs to no organization with a project yet.")  # fmt: skip
    first = projects[0]
    return _redirect(f"{root}/p/{first['organization']}/{first['project']}/")


async def login_form(d: Dashboard, request: Request, *, status: int = 200, error: str = "",
                     username: str = "") -> Response:  # fmt: skip
    nonce = d.login_nonce(request) or secrets.token_urlsafe(24)
    keys = await d.keys()
    target = _safe_next(d.root(request), request.query_params.get("next"))
    response = d.render(request, "login.html", status, csrf=keys.csrf_token("login:" + nonce), error=error,
                        username=username, next=target)
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict",
                        secure=d.secure(request), path=f"{d.root(request)}/login")  # fmt: skip
    return response


async def login_page(d: Dashboard, request: Request) -> Response:
    if await d.session(request) is not None:
        return _redirect(_safe_next(d.root(request), request.query_params.get("next")))
    return await login_form(d, request)


async def login(d: Dashboard, request: Request) -> Response:
    nonce = d.login_nonce(request)
    form = await d.form(request, "login:" + nonce if nonce else None)
    # the same budget per client address as POST /api/authenticate/: each attempt costs an scrypt
    if d.api.login_limiter is not None:
        d.api.login_limiter.check(client_address(request))
    username, password = form.get("username", ""), form.get("password", "")
    if not username or not password:
        return await login_form(d, request, status=400, error="Give your username and password.", username=username)
    user = await d.api.read(lambda tx: tx.authenticate_user(username, password))
    if user is None:
        return await login_form(d, request, status=401, error="Wrong username or password.", username=username)
    new_hash = await run_in_threadpool(hash_password, password) if user["rehash"] else None

    def begin(tx: Tx) -> str:
        if new_hash is not None:
            tx.set_password(user["id"], new_hash)
        return store.create_session(tx, int(user["id"]), d.session_seconds)

    key = await d.api.write(begin)
    keys = await d.keys()
    root = d.root(request)
    response = _redirect(_safe_next(root, form.get("next")))
    response.set_cookie(SESSION_COOKIE, keys.session_cookie(key), max_age=int(d.session_seconds), httponly=True,
                        samesite="lax", secure=d.secure(request), path=f"{root}/")  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path=f"{root}/login")
    return response


async def logout(d: Dashboard, request: Request) -> Response:
    found = await d.session(request)
    root = d.root(request)
    if found is not None:
        user, key = found
        await d.form(request, user.key_hash)
        await d.api.write(lambda tx: store.end_session(tx, key))
    response = _redirect(f"{root}/login")
    response.delete_cookie(SESSION_COOKIE, path=f"{root}/")
    return response


# -- the task list --------------------------------------------------------------------------------------
async def task_list(d: Dashboard, request: Request) -> Response:
    user = await d.signed_in(request)
    scope, projects = await d.project(request, user)
    query = request.query_params
    chosen = [v for v in query.getlist("status") if v]
    statuses = _views.status_filters(chosen)
    name = (query.get("name") or "").strip()[:200]
    tag = (query.get("tag") or "").strip()[:300]
    cursor = query.get("cursor") or None
    error = ""

    def read(tx: Tx) -> tuple[Any, dict[str, int], dict[str, str]]:
        page = store.list_page(tx, scope, statuses=statuses, name=name, tag=tag, cursor=cursor, page_size=PAGE_SIZE)
        ids = [t["id"] for t in page.results]
        parents = {t["parent"] for t in page.results if t["parent"]}
        return page, store.children_counts(tx, scope, ids), store.names(tx, scope, parents)

    try:
        page, counts, parent_names = await d.api.read(read)
    except ValidationError as exc:
        page, counts, parent_names, error = None, {}, {}, f"{exc.attr}: {exc.detail}" if exc.attr else str(exc.detail)
    keys = await d.keys()
    filters = {"status": chosen, "name": name, "tag": tag}
    base_query = [(k, v) for k, v in query.multi_items() if k != "cursor"]
    now = time.time()
    return d.render(
        request,
        "list.html",
        400 if error else 200,
        user=user,
        csrf=keys.csrf_token(user.key_hash),
        scope=scope,
        projects=projects,
        page=page,
        tasks=[
            dict(t, children=counts.get(t["id"], 0), parent_name=parent_names.get(t["parent"] or ""),
                 elapsed=_views.elapsed(t, now))
            for t in (page.results if page else [])
        ],
        filters=filters,
        status_choices=_views.STATUS_CHOICES,
        live_statuses=statuses,
        first_page=cursor is None,
        base_query=base_query,
        error=error,
        now=now,
        name_budget=store.NAME_BUDGET,
    )


# -- a task ---------------------------------------------------------------------------------------------
def _task_context(tx: Tx, scope: Scope, task_id: str, *, public: bool = False) -> dict[str, Any]:
    task = store.task_detail(tx, scope, task_id)
    context: dict[str, Any] = {"task": task, "elapsed": _views.elapsed(task, time.time())}
    data, output, logs = _views.split_data(task.get("data"))
    context.update(data_tree=None if data is None else _views.tree(data), output=output,
                   logs=_views.log_rows(logs) if logs else None)  # fmt: skip
    context["actions"] = tx.list_actions(scope, task_id)
    if not public:
        context["children"] = [dict(c, elapsed=_views.elapsed(c, time.time()))
                               for c in store.children(tx, scope, task_id)]  # fmt: skip
        context["parent"] = store.task_detail(tx, scope, task["parent"]) if task["parent"] else None
    return context


async def task_page(d: Dashboard, request: Request, *, status: int = 200, error: str = "",
                    form: dict[str, str] | None = None) -> Response:  # fmt: skip
    user = await d.signed_in(request)
    scope, projects = await d.project(request, user)
    task_id = request.path_params["task"]
    context = await d.api.read(lambda tx: _task_context(tx, scope, task_id))
    keys = await d.keys()
    base = d.settings.base_url or str(request.base_url).rstrip("/")
    return d.render(request, "task.html", status, user=user, csrf=keys.csrf_token(user.key_hash), scope=scope,
                    projects=projects, public_url=d.public_url(base, context["task"]), error=error,
                    form=form or {}, terminal=TERMINAL, **context)  # fmt: skip


async def task_live(d: Dashboard, request: Request) -> Response:
    """The parts of a task's page that change, rendered again (the page's script swaps them in)."""
    user = await d.signed_in(request)
    scope, _ = await d.project(request, user)
    task_id = request.path_params["task"]
    context = await d.api.read(lambda tx: _task_context(tx, scope, task_id))
    keys = await d.keys()
    project_base = f"{_project_url(d.root(request), scope)}"
    module = d.env.get_template("_task_parts.html").make_module(
        {"root": d.root(request), "user": user, "csrf": keys.csrf_token(user.key_hash), "scope": scope,
         "project_base": project_base, "task_base": f"{project_base}tasks/{task_id}/", **context}
    )  # fmt: skip
    return JSONResponse({"sections": _sections(module)})


def _sections(module: Any) -> dict[str, str]:
    names = ("summary", "timeline", "details", "actions_list", "children_list")
    return {name: str(getattr(module, name)()) for name in names}


async def _project_write(d: Dashboard, request: Request) -> tuple[Scope, str, dict[str, str]]:
    user = await d.signed_in(request)
    scope, _ = await d.project(request, user)
    form = await d.form(request, user.key_hash)
    return scope, request.path_params["task"], form


async def cancel_task(d: Dashboard, request: Request) -> Response:
    scope, task_id, _ = await _project_write(d, request)
    await d.api.write(lambda tx: tx.cancel_task(scope, task_id))
    return _redirect(f"{_project_url(d.root(request), scope)}tasks/{task_id}/")


async def add_action(d: Dashboard, request: Request) -> Response:
    scope, task_id, form = await _project_write(d, request)
    try:
        config: Any = json.loads(form.get("config") or "{}")
    except ValueError:
        config = None
        error = "config: must be JSON, such as {\"url\": \"https://example.com/hook\"}."
    else:
        error = ""
    if not error:
        try:
            fields = validate_action({"trigger": form.get("trigger", ""), "integration": form.get("integration", ""),
                                      "config": config}, partial=False)  # fmt: skip
            check_action(fields)
            await d.api.write(lambda tx: tx.create_action(scope, task_id, fields))
        except ValidationError as exc:
            error = f"{exc.attr}: {exc.detail}" if exc.attr else str(exc.detail)
    if error:
        return await task_page(d, request, status=400, error=error, form=form)
    return _redirect(f"{_project_url(d.root(request), scope)}tasks/{task_id}/#actions")


async def cancel_action(d: Dashboard, request: Request) -> Response:
    scope, task_id, _ = await _project_write(d, request)
    action = request.path_params["action"]
    await d.api.write(lambda tx: tx.cancel_action(scope, task_id, action))
    return _redirect(f"{_project_url(d.root(request), scope)}tasks/{task_id}/#actions")


# -- the public page ------------------------------------------------------------------------------------
async def _public(d: Dashboard, request: Request) -> tuple[Scope, dict[str, Any], bool]:
    keys = await d.keys()
    task_id = keys.public_task(request.path_params["token"])
    if task_id is None:
        raise NotFound("This link is not valid (it may have been replaced).")

    def read(tx: Tx) -> tuple[Scope, dict[str, Any], bool]:
        found = store.task_by_public_id(tx, task_id)
        if found is None:
            raise NotFound("This task no longer exists.")
        scope, task = found
        details = store.project_settings(tx, scope.project_id)["public_details"]
        context = _task_context(tx, scope, task_id, public=True) if details else {
            "task": task, "elapsed": _views.elapsed(task, time.time())}  # fmt: skip
        return scope, context, details

    found: tuple[Scope, dict[str, Any], bool] = await d.api.read(read)
    return found


async def public_page(d: Dashboard, request: Request) -> Response:
    _, context, details = await _public(d, request)
    response = d.render(request, "public.html", details=details, token=request.path_params["token"], **context)
    # the link is the secret: never sent on to another site
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex"
    return response


async def public_live(d: Dashboard, request: Request) -> Response:
    _, context, details = await _public(d, request)
    module = d.env.get_template("_task_parts.html").make_module({"root": d.root(request), "details": details,
                                                                 **context})  # fmt: skip
    sections = _sections(module)
    shown = ("summary", "timeline", "details", "actions_list") if details else ("summary", "timeline")
    return JSONResponse({"sections": {name: sections[name] for name in shown}})


# -- live streams ---------------------------------------------------------------------------------------
async def _close_on_shutdown(shutdown: anyio.Event, listener: Listener) -> None:
    await shutdown.wait()
    listener.close()


async def _stream(d: Dashboard, request: Request, listener: Listener,
                  shutdown: anyio.Event) -> AsyncIterator[dict[str, Any] | bytes]:  # fmt: skip
    d.feed.listen(listener)
    # the server is stopping: the stream ends as a finished response (the page's EventSource reconnects to the
    # next server), not cut off mid-body, which uvicorn reports as an error for every open page
    watcher = asyncio.ensure_future(_close_on_shutdown(shutdown, listener))
    try:
        yield {"event": "hello", "data": "{}", "retry": _RETRY_MS}
        deadline = time.monotonic() + d.stream_seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                data = await asyncio.wait_for(listener.queue.get(), timeout=left)
            except asyncio.TimeoutError:
                return
            if listener.closed:
                return
            if data is RESYNC or listener.behind:
                yield {"event": "resync", "data": "{}"}
                return
            # an event encoded once per poll for every page of the project, written as it is
            yield data
    finally:
        watcher.cancel()
        d.feed.leave(listener)


def _events(d: Dashboard, request: Request, listener: Listener) -> Response:
    shutdown = anyio.Event()
    return EventSourceResponse(_stream(d, request, listener, shutdown), ping=15, send_timeout=30,
                               shutdown_event=shutdown, shutdown_grace_period=2,
                               headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip


async def project_events(d: Dashboard, request: Request) -> Response:
    user = await d.signed_in(request)
    scope, _ = await d.project(request, user)
    task = request.query_params.get("task") or None
    return _events(d, request, Listener(scope.project_id, task=task))


async def public_events(d: Dashboard, request: Request) -> Response:
    scope, context, details = await _public(d, request)
    task = context["task"]["id"]
    return _events(d, request, Listener(scope.project_id, task=task, public=True, details=details))


_PROJECT = "/p/{org}/{project}"
_TASK = _PROJECT + "/tasks/{task}"
ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/", home, ["GET"]),
    ("/login", login_page, ["GET"]),
    ("/login", login, ["POST"]),
    ("/logout", logout, ["POST"]),
    (_PROJECT + "/", task_list, ["GET"]),
    (_PROJECT + "/events", project_events, ["GET"]),
    (_TASK + "/", task_page, ["GET"]),
    (_TASK + "/live", task_live, ["GET"]),
    (_TASK + "/cancel", cancel_task, ["POST"]),
    (_TASK + "/actions", add_action, ["POST"]),
    (_TASK + "/actions/{action:int}/cancel", cancel_action, ["POST"]),
    ("/public/{token}", public_page, ["GET"]),
    ("/public/{token}/live", public_live, ["GET"]),
    ("/public/{token}/events", public_events, ["GET"]),
]
