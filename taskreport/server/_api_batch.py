"""``POST .../tasks/batch/``: several task creates and updates in one request (a taskreport extension).

::

    {"operations": [
      {"op": "create", "ref": "r1...", "fields": {"name": "a"}, "parent_ref": "r0..."},
      {"op": "update", "ref": "r2...", "fields": {"value": 5}},
      {"op": "update", "id": "57ae8eVBrH7jbDgmYj6Ut2", "fields": {"status": "success"}}
    ]}

Each operation is checked as its single endpoint checks it (``fields`` as ``POST .../tasks/`` or ``PATCH
.../tasks/{id}/`` take them) and applied in its own savepoint, so one that fails fails alone: the answer
(``200``) holds one result per operation, in order, ``{"status": 201, "id", "ref"}`` (``200`` for an update or
a replayed create) or the error body with its ``status``; ``attr`` names ``fields.<field>``, ``op``, ``ref``,
``id`` or ``parent_ref``. The whole batch is one job of the group-commit writer.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from starlette.responses import Response

from .._errors import TaskReportError, ValidationError
from .._store import Scope, Tx
from .._validation import valid_text, validate_ref
from ._api import Api
from ._request import Ctx, task_fields
from ._responses import json_response, server_error_body
from ._routing import Resource

logger = logging.getLogger("taskreport.server")

Result = dict[str, Any]
#: attrs that name a part of the operation, not of its fields
_OPERATION_ATTRS = frozenset({"op", "ref", "id", "parent_ref", "merge"})


@dataclasses.dataclass(frozen=True)
class Operation:
    op: str
    fields: dict[str, Any]
    ref: str | None = None
    id: str | None = None
    parent_ref: str | None = None
    #: an update's ``data`` and ``tags`` merged key by key into what is there, instead of replacing it
    merge: bool = False


def _in_fields(exc: ValidationError) -> ValidationError:
    """The error with its attr as a batch names it: ``fields.value``, or the operation's own part."""
    attr = exc.attr
    if attr not in _OPERATION_ATTRS:
        attr = "fields" if attr in (None, "non_field_errors") else f"fields.{attr}"
    return ValidationError(exc.detail, code=exc.code, attr=attr)


def _failed(exc: TaskReportError) -> Result:
    if isinstance(exc, ValidationError):
        exc = _in_fields(exc)
    return {"status": exc.status_code or 500, **exc.to_body()}


def _operations(data: Any, limit: int) -> list[Any]:
    operations = data.get("operations") if isinstance(data, dict) else None
    if not isinstance(operations, list):
        raise ValidationError('The body must be {"operations": [...]}.', attr="operations", code="invalid")
    if len(operations) > limit:
        raise ValidationError(
            f"A batch holds at most {limit} operations; this one holds {len(operations)}.",
            attr="operations",
            code="max_length",
        )
    return operations


def parse_operation(item: Any) -> Operation:
    """One operation, checked as its single endpoint checks it; ValidationError names what is wrong."""
    if not isinstance(item, dict):
        raise ValidationError(f'Expected an operation object but got type "{type(item).__name__}".', attr="op")
    op = item.get("op")
    if op not in ("create", "update"):
        code = "required" if op is None else "invalid_choice"
        raise ValidationError('must be "create" or "update".', attr="op", code=code)
    ref, task_id, parent_ref = item.get("ref"), item.get("id"), item.get("parent_ref")
    if ref is not None:
        validate_ref(ref, "ref")
    if parent_ref is not None:
        validate_ref(parent_ref, "parent_ref")
    if task_id is not None:
        if not isinstance(task_id, str) or not 0 < len(task_id) <= 255:
            raise ValidationError("must be a task id: a string of 1-255 characters.", attr="id")
        valid_text("id", task_id)
        if op == "create":
            raise ValidationError("A create names its task by ref, not by id.", attr="id")
        if ref is not None:
            raise ValidationError("Give ref or id, not both.", attr="id")
    elif ref is None:
        raise ValidationError("This field is required." if op == "create" else "Give ref or id.", attr="ref",
                              code="required")  # fmt: skip
    merge = item.get("merge", False)
    if not isinstance(merge, bool):
        raise ValidationError("must be true or false.", attr="merge")
    fields = task_fields(item.get("fields", {}), partial=op == "update")
    return Operation(op, fields, ref, task_id, parent_ref, merge)


def apply(tx: Tx, scope: Scope, operation: Operation) -> Result:
    if operation.op == "create":
        assert operation.ref is not None
        row = tx.create_task(scope, operation.fields, idempotency_key=operation.ref, parent_ref=operation.parent_ref)
        return {"status": 200 if row.replayed else 201, "id": row["id"], "ref": row["ref"]}
    if operation.ref is not None:
        row = tx.update_task_by_ref(scope, operation.ref, operation.fields, parent_ref=operation.parent_ref,
                                    merge=operation.merge)
    else:
        assert operation.id is not None
        row = tx.update_task(scope, operation.id, operation.fields, parent_ref=operation.parent_ref,
                             merge=operation.merge)
    return {"status": 200, "id": row["id"], "ref": row["ref"]}


def run(tx: Tx, scope: Scope, planned: list[Operation | Result]) -> list[Result]:
    """Apply every operation in its own savepoint (the writer's job for one batch)."""
    operations = [item for item in planned if isinstance(item, Operation)]
    tx.lock_tasks(scope, ids=[op.id for op in operations if op.id is not None],
                  refs=[r for op in operations for r in (op.ref, op.parent_ref) if r is not None])  # fmt: skip
    results: list[Result] = []
    for item in planned:
        if not isinstance(item, Operation):
            results.append(item)  # refused before the write
            continue
        try:
            with tx.savepoint():
                results.append(apply(tx, scope, item))
        except TaskReportError as exc:
            results.append(_failed(exc))
        except Exception as exc:
            if tx.conflict(exc):
                # a deadlock with another writer: the writer runs this whole request again on its own, where
                # each operation gets its real answer (answering this one with a 500 would lose a write)
                raise
            logger.exception("taskreport server: a batch operation failed")
            results.append({"status": 500, **server_error_body()})
    return results


async def batch(api: Api, ctx: Ctx) -> Response:
    scope = await api.project(ctx)
    operations = _operations(await api.body(ctx), api.settings.max_batch_ops)
    planned: list[Operation | Result] = []
    for item in operations:
        try:
            planned.append(parse_operation(item))
        except ValidationError as exc:
            planned.append(_failed(exc))
    results = await api.write(lambda tx: run(tx, scope, planned)) if operations else []
    return json_response({"results": results})


BATCH = Resource({"POST": batch})
