"""Turning what was taken from the pending map into operations a transport can send.

With task references (our server, the embedded store) everything goes in one round: a task's create by its
reference, updates by reference or id, parents named by reference when their id is not known yet. With a
stock server of the API, creates and updates go by id: a child waits a round for its parent's id, and a task
known only by a reference from another process can't be found there (see :func:`plan` for what degrades).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from typing import Any

from ._errors import ValidationError
from ._pending import Entry
from ._ratelog import RateLimitedLog
from ._transport import Op
from ._validation import INT64_MAX, validate_actions, validate_task_field

logger = logging.getLogger("taskreport")


@dataclasses.dataclass
class Planned:
    """One operation, with what to put back if it must be sent again."""

    entry: Entry
    op: Op
    #: the changes an update carries (put back on a retryable failure); empty for a create, whose fields
    #: stay frozen on the entry
    fields: dict[str, Any]
    #: the change came from the spool of an earlier process, not from this one
    backlog: bool = False


class Planner:
    def __init__(self, log: RateLimitedLog) -> None:
        self.log = log
        #: fields refused here (invalid); counted in stats()["failed"]
        self.invalid = 0

    def clean(self, entry: Entry, fields: dict[str, Any]) -> dict[str, Any]:
        """Validated fields; an invalid one is logged and left out, never sent and never raised."""
        clean: dict[str, Any] = {}
        for key, value in fields.items():
            if key == "value" and type(value) is int and 0 <= value <= INT64_MAX:
                clean[key] = value  # progress, by far the commonest field: checked here without a call
                continue
            try:
                clean[key] = validate_actions(value) if key == "actions" else validate_task_field(key, value)
            except ValidationError as exc:
                self.invalid += 1
                self.log.log(
                    logging.ERROR, f"invalid:{exc.attr}", "taskreport: ignoring an invalid field of task %s: %s",
                    entry.ref, exc,
                )
        if clean.get("status") == "stale":
            del clean["status"]
            self.invalid += 1
            self.log.log(logging.ERROR, "invalid:status", "taskreport: a client can't set status stale; ignored")
        clean.pop("parent", None)  # set once, at creation, from the entry
        return clean

    def plan(
        self, items: Iterable[tuple[Entry, dict[str, Any], bool]], refs: bool
    ) -> tuple[list[Planned], list[tuple[Entry, dict[str, Any], bool]]]:
        """Operations to send now, and the changes that must wait for a later round (a child whose parent's
        create has not been answered yet, on a server without references)."""
        now: list[Planned] = []
        later: list[tuple[Entry, dict[str, Any], bool]] = []
        pid = os.getpid()
        creates = False
        for entry, raw, backlog in items:
            if entry.failed:
                continue
            value = raw.get("value")
            # progress alone, the commonest change, has nothing else to check
            progress_only = len(raw) == 1 and type(value) is int and 0 <= value <= INT64_MAX
            fields = raw if progress_only else self.clean(entry, raw)
            if entry.pid == pid and not entry.acked:  # entry.creates, without a getpid() per task
                creates = True
                if not self._create(entry, fields, backlog, refs, now, later):
                    continue
            elif refs:
                now.append(Planned(entry, Op("update", entry.ref, entry.id, fields), fields, backlog))
            elif entry.id is not None:
                now.append(Planned(entry, Op("update", None, entry.id, fields), fields, backlog))
            elif entry.pid is None:
                self._create_attached(entry, fields, backlog, now)
            else:
                self.log.log(
                    logging.WARNING, "orphan",
                    "taskreport: task %s was created in another process (before a fork) that had not sent it "
                    "yet, and this service has no task references: its updates from here are dropped "
                    "(call task.wait_id() before forking to avoid this)", entry.ref,
                )
        if refs and creates:
            # parents first, then children, then updates: a child's parent then exists when it arrives
            now.sort(key=_order)
        return now, later

    def _create(
        self,
        entry: Entry,
        fields: dict[str, Any],
        backlog: bool,
        refs: bool,
        now: list[Planned],
        later: list[tuple[Entry, dict[str, Any], bool]],
    ) -> bool:
        birth = entry.birth
        rest: dict[str, Any] = {}
        if birth is None:
            birth = fields
        elif refs:
            rest = fields  # the create goes again exactly as before, so a replay changes nothing
        else:
            birth = {**birth, **fields}  # a stock server makes nothing of a replay: one request says it all
        if "name" not in birth:
            entry.failed = True
            self.log.log(logging.ERROR, "noname", "taskreport: task %s has no name; it is not sent", entry.ref)
            return False
        body = dict(birth)
        parent_ref = None
        parent = entry.parent
        if parent is not None and parent.failed and parent.id is None:
            self.log.log(
                logging.WARNING, "parent",
                "taskreport: task %s is sent without its parent %s, which the service refused", entry.ref, parent.ref,
            )
        elif parent is not None:
            if parent.id is not None:
                body["parent"] = parent.id
            elif refs:
                parent_ref = parent.ref
            elif parent.creates and not parent.failed:
                # its create is on its way: this one follows in the next round, with the id
                later.append((entry, fields, backlog))
                return False
            else:
                self.log.log(
                    logging.WARNING, "parent",
                    "taskreport: task %s is sent without its parent %s, whose id can't be known here (a "
                    "reference from another process, on a service without references)", entry.ref, parent.ref,
                )
        elif entry.parent_id is not None:
            body["parent"] = entry.parent_id
        entry.birth = birth
        now.append(Planned(entry, Op("create", entry.ref, None, body, parent_ref), {}, backlog))
        if rest:
            now.append(Planned(entry, Op("update", entry.ref, None, rest), rest, backlog))
        return True

    def _create_attached(self, entry: Entry, fields: dict[str, Any], backlog: bool, now: list[Planned]) -> None:
        """A task known here by reference only, on a service that has no references: nothing can find the
        task its creator made, so it is created again from here, marked with the reference, and logged."""
        self.log.log(
            logging.WARNING, "attach",
            "taskreport: this service has no task references, so the task attached by reference %s is "
            "created again from this process (its data carries taskreport_ref to join the two)", entry.ref,
        )
        data = fields.get("data")
        body = {"name": entry.name_hint or entry.ref, **fields}
        body["data"] = {**data, "taskreport_ref": entry.ref} if isinstance(data, dict) else {
            **({} if data is None else {"data": data}), "taskreport_ref": entry.ref}
        entry.pid = os.getpid()
        entry.birth = body
        now.append(Planned(entry, Op("create", entry.ref, None, dict(body)), {}, backlog))


def _order(planned: Planned) -> tuple[bool, bool]:
    op = planned.op
    return op.kind != "create", op.fields.get("parent") is not None or op.parent_ref is not None
