"""Action triggers: when a task write reaches one of an action's points, queue a firing in the outbox.

A trigger is a comma-separated list of points:

- ``50``: the task's ``value`` reaches or passes 50;
- ``95%``: ``value_percent`` reaches or passes 95;
- ``*/10`` and ``*/25%``: every multiple of 10 (of 25 %), starting at 0;
- a status name (``success``, ``error``, ``stale``...): the task enters that status;
- ``max_runtime_exceeded``: the sweeper finds the task running past its ``max_runtime``.

A write that passes several points of one action fires it once, for the last of them in the order written
(the multiples of ``*/N`` in ascending order). Firings are rows of ``action_firings`` inserted in the same
transaction as the write, so a write that rolls back fires nothing and embedded-mode writes queue firings
that a server delivers later.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Collection, Iterable
from typing import Any

from .._errors import ValidationError
from .._status import VALUES as STATUS_VALUES
from .._validation import parse_recipients
from ._db import Cursor, Row

EVENTS = frozenset({"max_runtime_exceeded"})
INTEGRATIONS = ("email", "webhook:<name>")


@dataclasses.dataclass(frozen=True)
class Point:
    """One point of a trigger. ``kind``: value, percent, every_value, every_percent, status or event."""

    kind: str
    number: int = 0
    name: str = ""


def parse_trigger(text: str) -> list[Point]:
    """The points of a trigger; ValidationError (attr ``trigger``) for anything unrecognised."""
    points: list[Point] = []
    for raw in str(text).split(","):
        item = raw.strip()
        if not item:
            raise ValidationError("has an empty point.", attr="trigger")
        every = item.startswith("*/")
        body = item[2:] if every else item
        percent = body.endswith("%")
        digits = body[:-1] if percent else body
        if digits.isdigit():
            number = int(digits)
            if every and number == 0:
                raise ValidationError(f"{item!r}: the step of */N must be at least 1.", attr="trigger")
            if percent and number > 100:
                raise ValidationError(f"{item!r}: a percentage can be at most 100%.", attr="trigger")
            kind = ("every_" if every else "") + ("percent" if percent else "value")
            points.append(Point(kind, number))
        elif not every and item in STATUS_VALUES:
            points.append(Point("status", name=item))
        elif not every and item in EVENTS:
            points.append(Point("event", name=item))
        else:
            raise ValidationError(
                f"{item!r} is not a point: use a number, a percentage like 95%, */N, */N%, a status or "
                "max_runtime_exceeded.",
                attr="trigger",
            )
    return points


def check_action(fields: dict[str, Any], *, prefix: str = "") -> None:
    """Server-side checks of an action's trigger, integration and config, beyond the schema's types."""
    if "trigger" in fields:
        try:
            parse_trigger(fields["trigger"])
        except ValidationError as exc:
            raise ValidationError(exc.detail, attr=f"{prefix}trigger") from None
    integration = fields.get("integration")
    config = fields.get("config")
    if integration is None:
        return
    if integration.startswith("webhook:") and len(integration) > len("webhook:"):
        url = config.get("url") if isinstance(config, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValidationError('a webhook needs {"url": "https://..."} in its config.', attr=f"{prefix}config")
    elif integration == "email":
        to = config.get("to") if isinstance(config, dict) else None
        try:
            parse_recipients(to)
        except ValueError as exc:
            raise ValidationError(
                f'an email action needs {{"to": "address"}} in its config: {exc}.', attr=f"{prefix}config"
            ) from None
    else:
        raise ValidationError(
            f"{integration!r} is not supported: use {' or '.join(INTEGRATIONS)}.", attr=f"{prefix}integration"
        )


def _crossed(old: int | None, new: int | None, point: int) -> bool:
    return new is not None and new >= point and (old is None or old < point)


def _highest_multiple(old: int | None, new: int | None, step: int) -> int | None:
    if new is None or new < 0:
        return None
    top = new // step * step
    return top if old is None or old < top else None


def fired_point(
    points: Iterable[Point],
    old: Row | None,
    new: Row,
    events: Collection[str] = (),
) -> str | None:
    """The point this write fires, as text (``50``, ``95%``, ``success``...), or None.

    ``old`` and ``new`` hold ``value``, ``value_percent`` and ``status`` before and after the write
    (``old`` None for a new task).
    """
    before = old or {}
    fired: str | None = None
    for point in points:
        hit: str | None = None
        if point.kind in ("value", "percent"):
            key = "value" if point.kind == "value" else "value_percent"
            if _crossed(before.get(key), new.get(key), point.number):
                hit = f"{point.number}{'%' if point.kind == 'percent' else ''}"
        elif point.kind in ("every_value", "every_percent"):
            key = "value" if point.kind == "every_value" else "value_percent"
            top = _highest_multiple(before.get(key), new.get(key), point.number)
            if top is not None:
                hit = f"{top}{'%' if point.kind == 'every_percent' else ''}"
        elif point.kind == "status":
            if new.get("status") == point.name and before.get("status") != point.name:
                hit = point.name
        elif point.name in events:
            hit = point.name
        if hit is not None:
            fired = hit
    return fired


def queue_firings(
    cur: Cursor,
    task_pk: int,
    old: Row | None,
    new: Row,
    *,
    events: Collection[str] = (),
    now: float | None = None,
) -> int:
    """Evaluate every live action of a task against one write; returns how many fired.

    ``new`` is the task as the API renders it (store form, epoch times); it becomes the firing's payload.
    """
    actions = cur.all(
        "SELECT id, \"trigger\" FROM actions WHERE task_id = ? AND status <> 'cancelled' ORDER BY id", (task_pk,)
    )
    if not actions:
        return 0
    now = time.time() if now is None else now
    payload: str | None = None
    count = 0
    for action in actions:
        try:
            points = parse_trigger(action["trigger"])
        except ValidationError:
            # an action stored without the server's checks (embedded mode) must not break task writes
            continue
        point = fired_point(points, old, new, events)
        if point is None:
            continue
        if payload is None:
            payload = json.dumps(new, separators=(",", ":"))
        cur.execute(
            "INSERT INTO action_firings (action_id, task_id, point, payload, next_attempt, created, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (action["id"], task_pk, point, payload, now, now, now),
        )
        count += 1
    cur.fired += count
    return count
