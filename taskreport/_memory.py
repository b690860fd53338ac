"""An in-memory transport: tasks kept in this process's memory, as a service with task references keeps them.

It is the recorder behind :func:`taskreport.testing.capture_tasks`: no thread, no network, no file. Values
go through a JSON round trip on the way in, so what a test reads is what a service would have stored (a
tuple comes back a list, and later changes to the caller's objects change nothing here). It follows the
store's rules for references (a create replayed changes nothing; an update or a parent by reference that
arrives first makes a placeholder the create fills in; parents nest one level deep) closely enough for
tests, without the store's concurrency machinery.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ._errors import NotFound, TaskReportError, ValidationError
from ._models import value_percent
from ._status import RUNNING, TERMINAL
from ._transport import Op, PageResult, Row

#: how far a status has come; a create fills in a placeholder's status only with a higher rank
_RANK = {"pending": 0, "success": 2, "error": 2, "cancelled": 2}
_PLAIN = ("name", "queue", "external_id", "status", "value", "value_max", "start_time", "end_time", "time_to_start",
          "max_runtime", "stale_timeout")  # fmt: skip
_FILLED = ("queue", "external_id", "value", "value_max", "start_time", "end_time", "time_to_start", "max_runtime",
           "stale_timeout")  # fmt: skip


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _copy(row: Row) -> Row:
    out: Row = _json(row)
    return out


class MemoryTransport:
    """Tasks and actions in dicts, under one lock. ``tasks()`` and ``ended()`` read them back."""

    refs: bool | None = True
    #: no request to bound: everything pending goes in one send
    max_ops = 1_000_000

    def __init__(self, organization: str = "memory", project: str = "default") -> None:
        self.organization = organization
        self.project = project
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._rows: dict[str, Row] = {}
        self._by_ref: dict[str, str] = {}
        self._born: set[str] = set()
        self._actions: dict[str, list[Row]] = {}
        self._action_keys: dict[tuple[str, str], Row] = {}
        #: task ids in the order they first reached a terminal status
        self._ended: list[str] = []
        #: operations applied (creates and updates), for tests of the recorder itself
        self.operations = 0

    def __repr__(self) -> str:
        return f"<MemoryTransport {len(self._rows)} task(s)>"

    # -- reading back ---------------------------------------------------------------------------------
    def tasks(self) -> list[Row]:
        """Every task, in the order they were made (placeholders included), as the API's JSON."""
        with self._lock:
            return [_copy(self._out(row)) for row in self._rows.values()]

    def ended(self) -> list[Row]:
        """The tasks that ended, in the order they ended (their ``end_time``, then arrival)."""
        with self._lock:
            rows = [self._rows[i] for i in self._ended if self._rows[i]["status"] in TERMINAL]
            order = {task_id: n for n, task_id in enumerate(self._ended)}
            rows.sort(key=lambda r: (r["end_time"] if r["end_time"] is not None else float("inf"), order[r["id"]]))
            return [_copy(self._out(row)) for row in rows]

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._by_ref.clear()
            self._born.clear()
            self._actions.clear()
            self._action_keys.clear()
            self._ended.clear()

    def _out(self, row: Row) -> Row:
        out = dict(row)
        out["value_percent"] = value_percent(row["value"], row["value_max"])
        return out

    # -- the transport ----------------------------------------------------------------------------------
    def send(self, ops: Sequence[Op]) -> list[Row | TaskReportError]:
        results: list[Row | TaskReportError] = []
        for op in ops:
            try:
                with self._lock:
                    if op.kind == "create":
                        row = self._create(op.fields, op.ref, op.parent_ref)
                    elif op.task_id is not None:
                        row = self._update(self._get(op.task_id), op.fields, op.parent_ref)
                    else:
                        assert op.ref is not None
                        row = self._update(self._by_reference(op.ref, op.fields), op.fields, op.parent_ref)
            except TaskReportError as exc:
                results.append(exc)
            else:
                results.append({"id": row["id"], "ref": row["ref"]})
        return results

    def _new(self, ref: str | None, name: str, now: float) -> Row:
        task_id = f"mem{next(self._ids):08d}"
        row: Row = dict.fromkeys(_PLAIN)
        row.update(id=task_id, organization=self.organization, project=self.project, name=name,
                   status="pending", value_max=100, data=None, tags={}, parent=None, ref=ref, created=now,
                   updated=now, url="", public_url="")
        self._rows[task_id] = row
        if ref is not None:
            self._by_ref[ref] = task_id
        return row

    def _get(self, task_id: str) -> Row:
        row = self._rows.get(str(task_id))
        if row is None:
            raise NotFound("Not found.")
        return row

    def _by_reference(self, ref: str, fields: Mapping[str, Any]) -> Row:
        task_id = self._by_ref.get(ref)
        if task_id is not None:
            return self._rows[task_id]
        return self._new(ref, str(fields.get("name") or ref), time.time())

    def _parent_of(self, fields: Mapping[str, Any], parent_ref: str | None, own: str | None) -> str | None:
        if parent_ref is not None:
            if parent_ref == own:
                raise ValidationError("A task can not be its own parent.", attr="parent_ref")
            named = self._by_reference(parent_ref, {})
            return str(named["parent"] or named["id"])  # one level deep
        parent_id = fields.get("parent")
        if parent_id is None:
            return None
        parent = self._rows.get(str(parent_id))
        if parent is None:
            raise ValidationError(f"Invalid pk {parent_id!r} - object does not exist.", attr="parent",
                                  code="does_not_exist")
        if parent["parent"] is not None:
            raise ValidationError("Tasks nest one level deep: the parent already has a parent.", attr="parent")
        return str(parent_id)

    def _create(self, fields: Mapping[str, Any], ref: str | None, parent_ref: str | None) -> Row:
        now = time.time()
        if ref is not None and ref in self._born:
            return self._rows[self._by_ref[ref]]  # a replay changes nothing
        parent = self._parent_of(fields, parent_ref, ref)
        existing: Row | None = self._rows.get(self._by_ref.get(ref, "")) if ref is not None else None
        if existing is None:
            row = self._new(ref, str(fields["name"]), now)
            changed = {k: fields[k] for k in _PLAIN if fields.get(k) is not None}
            if "data" in fields:
                changed["data"] = _json(fields["data"])
            changed["tags"] = _json(fields.get("tags") or {})
        else:  # a placeholder: fill it in
            row = existing
            changed = {"name": fields.get("name", row["name"])}
            for key in _FILLED:
                empty = row[key] == 100 if key == "value_max" else row[key] is None
                if fields.get(key) is not None and empty:
                    changed[key] = fields[key]
            status = fields.get("status")
            if status is not None and _RANK.get(status, 1) > _RANK.get(row["status"], 1):
                changed["status"] = status
            if "data" in fields:
                mine, theirs = row["data"], _json(fields["data"])
                both = isinstance(mine, dict) and isinstance(theirs, dict)
                changed["data"] = {**theirs, **mine} if both else (theirs if mine is None else mine)
            if fields.get("tags"):
                changed["tags"] = {**_json(fields["tags"]), **row["tags"]}
        if parent is not None and row["parent"] is None:
            self._adopt(row, parent)
            changed["parent"] = parent
        if ref is not None:
            self._born.add(ref)
        return self._apply(row, changed, fields, now)

    def _update(self, row: Row, fields: Mapping[str, Any], parent_ref: str | None) -> Row:
        now = time.time()
        parent = self._parent_of(fields, parent_ref, row["ref"]) if parent_ref is not None else None
        changed = {k: fields[k] for k in _PLAIN if k in fields}
        for key in ("data", "tags"):
            if key in fields:
                changed[key] = _json(fields[key]) if key == "data" else _json(fields[key] or {})
        if parent is not None and parent != row["parent"]:
            if row["parent"] is not None:
                raise ValidationError("A task's parent can not be changed once set.", attr="parent_ref")
            self._adopt(row, parent)
            changed["parent"] = parent
        return self._apply(row, changed, fields, now)

    def _adopt(self, row: Row, parent: str) -> None:
        if parent == row["id"]:
            raise ValidationError("A task can not be its own parent.", attr="parent")
        for child in self._rows.values():  # tasks nest one level deep: its children move up with it
            if child["parent"] == row["id"]:
                child["parent"] = parent

    def _apply(self, row: Row, changed: dict[str, Any], fields: Mapping[str, Any], now: float) -> Row:
        old_status = row["status"]
        row.update(changed)
        status = row["status"]
        if status != old_status or "status" in changed:
            if status in RUNNING and row["start_time"] is None:
                row["start_time"] = now
            if status in TERMINAL and row["end_time"] is None:
                row["end_time"] = now
            if status != "pending" and row["time_to_start"] is None and row["start_time"] is not None:
                row["time_to_start"] = max(0.0, row["start_time"] - row["created"])
        if status in TERMINAL and (old_status not in TERMINAL or row["id"] not in self._ended):
            if row["id"] in self._ended:  # ended again after a retry took it back: it ended now
                self._ended.remove(row["id"])
            self._ended.append(row["id"])
        row["updated"] = now
        for action in fields.get("actions") or ():
            self._add_action(row["id"], action, now)
        self.operations += 1
        return row

    def _add_action(self, task_id: str, fields: Mapping[str, Any], now: float, key: str | None = None) -> Row:
        if key is not None and (task_id, key) in self._action_keys:
            return self._action_keys[(task_id, key)]
        actions = self._actions.setdefault(task_id, [])
        action = {"id": sum(len(a) for a in self._actions.values()), "task": task_id, "status": "active",
                  "trigger": fields["trigger"], "integration": fields["integration"],
                  "config": _json(fields.get("config")), "created": now, "updated": now}
        actions.append(action)
        if key is not None:
            self._action_keys[(task_id, key)] = action
        return action

    # -- the rest of the API ------------------------------------------------------------------------
    def create_task(self, fields: Mapping[str, Any], idempotency_key: str | None = None) -> Row:
        with self._lock:
            return _copy(self._out(self._create(fields, idempotency_key, None)))

    def get_task(self, task_id: str) -> Row:
        with self._lock:
            return _copy(self._out(self._get(task_id)))

    def update_task(self, task_id: str, fields: Mapping[str, Any]) -> Row:
        with self._lock:
            return _copy(self._out(self._update(self._get(task_id), fields, None)))

    def cancel_task(self, task_id: str) -> None:
        self.update_task(task_id, {"status": "cancelled"})

    def list_tasks(self, filters: Mapping[str, Any], cursor: str | None, page_size: int | None) -> PageResult:
        rows = [row for row in reversed(self.tasks()) if _matches(row, filters)]
        start = int(cursor or 0)
        size = page_size or 100
        more = start + size < len(rows)
        return PageResult(rows[start:start + size], str(start + size) if more else None,
                          str(max(0, start - size)) if start else None)

    def list_actions(self, task_id: str) -> list[Row]:
        with self._lock:
            self._get(task_id)
            return [_copy(action) for action in self._actions.get(str(task_id), [])]

    def create_action(self, task_id: str, fields: Mapping[str, Any], idempotency_key: str | None = None) -> Row:
        with self._lock:
            self._get(task_id)
            return _copy(self._add_action(str(task_id), fields, time.time(), idempotency_key))

    def _action(self, task_id: str, action_id: int) -> Row:
        for action in self._actions.get(str(task_id), []):
            if action["id"] == action_id:
                return action
        raise NotFound("Not found.")

    def update_action(self, task_id: str, action_id: int, fields: Mapping[str, Any]) -> Row:
        with self._lock:
            action = self._action(task_id, action_id)
            action.update({k: _json(v) for k, v in fields.items()}, updated=time.time())
            return _copy(action)

    def cancel_action(self, task_id: str, action_id: int) -> None:
        self.update_action(task_id, action_id, {"status": "cancelled"})

    def set_timeout(self, seconds: float | None) -> None:
        pass

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def close(self) -> None:
        pass


def _matches(row: Row, filters: Mapping[str, Any]) -> bool:
    for key, wanted in filters.items():
        if wanted is None:
            continue
        if key == "tag":
            pairs = wanted.items() if isinstance(wanted, Mapping) else [str(w).split(":", 1) for w in (
                wanted if isinstance(wanted, (list, tuple)) else [wanted])]
            if any(row["tags"].get(k) != v for k, v in pairs):
                return False
        elif key in ("status", "name", "parent", "external_id", "ref") and str(row.get(key)) != str(
            getattr(wanted, "value", wanted)
        ):
            return False
    return True
