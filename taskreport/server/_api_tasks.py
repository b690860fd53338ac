"""The task and action endpoints: ``.../tasks/``, ``.../tasks/{id}/``, ``.../actions/`` and ``.../actions/{id}/``."""

from __future__ import annotations

import urllib.parse
from typing import Any

from starlette.responses import Response

from .._store import Row, TaskRow, Tx
from .._store._triggers import check_action
from .._validation import validate_action
from ._api import Api
from ._request import Ctx, expect_object, idempotency_key, positive_int, task_fields
from ._responses import json_response, render_action, render_task
from ._routing import Resource


# -- tasks ----------------------------------------------------------------------------------------------
async def list_tasks(api: Api, ctx: Ctx) -> Response:
    scope = await api.project(ctx)
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
    page_size = positive_int(query["page_size"], "page_size") if query.get("page_size") else None
    cursor = query.get("cursor") or None
    page = await api.read(lambda tx: tx.list_tasks(scope, cursor=cursor, page_size=page_size, **filters))
    return json_response(
        {
            "next": _page_url(ctx, page.next_cursor),
            "previous": _page_url(ctx, page.previous_cursor),
            "results": [render_task(row, ctx.base, api.public_link) for row in page.results],
        }
    )


def _page_url(ctx: Ctx, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    items = [(k, v) for k, v in ctx.request.query_params.multi_items() if k != "cursor"]
    items.append(("cursor", cursor))
    return f"{ctx.base}{ctx.request.url.path}?{urllib.parse.urlencode(items)}"


async def create_task(api: Api, ctx: Ctx) -> Response:
    scope = await api.project(ctx)
    fields = task_fields(await api.body(ctx), partial=False)
    key = idempotency_key(ctx.request)
    row = await api.write(lambda tx: tx.create_task(scope, fields, idempotency_key=key))
    # a replay (the key was used before) answers with the task as it is, and says it made nothing
    return json_response(render_task(row, ctx.base, api.public_link), 200 if row.replayed else 201)


async def get_task(api: Api, ctx: Ctx) -> Response:
    scope = await api.project(ctx)
    task_id = ctx.params["task"]
    row = await api.read(lambda tx: tx.get_task(scope, task_id))
    return json_response(render_task(row, ctx.base, api.public_link))


async def _update_task(api: Api, ctx: Ctx, *, partial: bool) -> Response:
    scope = await api.project(ctx)
    fields = task_fields(await api.body(ctx), partial=partial)
    task_id = ctx.params["task"]

    progress = (scope, task_id, fields) if partial and Tx.progress_only(fields) else None

    def write(tx: Tx) -> TaskRow:
        # the commonest request by far, progress, is one statement when nothing else can change
        fast = tx.update_progress(scope, task_id, fields) if progress else None
        return fast or tx.update_task(scope, task_id, fields)

    row = await api.write_progress(progress) if progress else None
    if row is None:
        row = await api.write(write, progress, (scope, task_id))
    return json_response(render_task(row, ctx.base, api.public_link))


async def put_task(api: Api, ctx: Ctx) -> Response:
    return await _update_task(api, ctx, partial=False)


async def patch_task(api: Api, ctx: Ctx) -> Response:
    return await _update_task(api, ctx, partial=True)


async def cancel_task(api: Api, ctx: Ctx) -> Response:
    scope = await api.project(ctx)
    task_id = ctx.params["task"]
    await api.write(lambda tx: tx.cancel_task(scope, task_id), touches=(scope, task_id))
    return Response(status_code=204)


# -- actions --------------------------------------------------------------------------------------------
async def list_actions(api: Api, ctx: Ctx) -> Response:
    scope = await api.project(ctx)
    task_id = ctx.params["task"]
    rows = await api.read(lambda tx: tx.list_actions(scope, task_id))
    return json_response([render_action(row) for row in rows])


async def create_action(api: Api, ctx: Ctx) -> Response:
    scope = await api.project(ctx)
    fields = validate_action(expect_object(await api.body(ctx)), partial=False)
    check_action(fields)
    task_id = ctx.params["task"]
    key = idempotency_key(ctx.request)
    # a repeat with the same key answers with the action the first made (201 both times)
    row = await api.write(lambda tx: tx.create_action(scope, task_id, fields, idempotency_key=key),
                          touches=(scope, task_id))
    return json_response(render_action(row), 201)


async def get_action(api: Api, ctx: Ctx) -> Response:
    scope = await api.project(ctx)
    task_id, action_id = ctx.params["task"], ctx.params["action"]
    row = await api.read(lambda tx: tx.get_action(scope, task_id, action_id))
    return json_response(render_action(row))


async def _update_action(api: Api, ctx: Ctx, *, partial: bool) -> Response:
    scope = await api.project(ctx)
    fields = validate_action(expect_object(await api.body(ctx)), partial=partial)
    task_id, action_id = ctx.params["task"], ctx.params["action"]

    def write(tx: Tx) -> Row:
        current = tx.get_action(scope, task_id, action_id)
        # the checks apply to the action as it will be, not to the fields alone
        check_action({k: current[k] for k in ("trigger", "integration", "config")} | fields)
        return tx.update_action(scope, task_id, action_id, fields)

    row = await api.write(write, touches=(scope, task_id))
    return json_response(render_action(row))


async def put_action(api: Api, ctx: Ctx) -> Response:
    return await _update_action(api, ctx, partial=False)


async def patch_action(api: Api, ctx: Ctx) -> Response:
    return await _update_action(api, ctx, partial=True)


async def cancel_action(api: Api, ctx: Ctx) -> Response:
    scope = await api.project(ctx)
    task_id, action_id = ctx.params["task"], ctx.params["action"]
    await api.write(lambda tx: tx.cancel_action(scope, task_id, action_id), touches=(scope, task_id))
    return Response(status_code=204)


TASKS = Resource({"GET": list_tasks, "POST": create_task})
TASK = Resource({"GET": get_task, "PUT": put_task, "PATCH": patch_task, "DELETE": cancel_task})
ACTIONS = Resource({"GET": list_actions, "POST": create_action})
ACTION = Resource({"GET": get_action, "PUT": put_action, "PATCH": patch_action, "DELETE": cancel_action})
