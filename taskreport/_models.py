"""Read-only records of tasks and actions, as the service returns them."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Mapping
from typing import Any

from ._status import Status
from ._timeutil import from_epoch, parse_timestamp, to_iso


def value_percent(value: int | None, value_max: int | None) -> int | None:
    """Progress as a whole percentage, capped at 100; None when there is no value to measure."""
    if value is None or not value_max:
        return None
    return min(100, value * 100 // value_max)


def _epoch(value: Any) -> float | None:
    return None if value is None else parse_timestamp(value)


@dataclasses.dataclass(frozen=True)
class TaskRecord:
    """A task as the service knows it."""

    id: str
    organization: str
    project: str
    name: str
    status: Status = Status.PENDING
    value: int | None = None
    value_max: int = 100
    value_percent: int | None = None
    data: Any = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    parent: str | None = None
    queue: str | None = None
    external_id: str | None = None
    #: the reference the task was created with (None for a task made without one)
    ref: str | None = None
    created: _dt.datetime | None = None
    updated: _dt.datetime | None = None
    start_time: _dt.datetime | None = None
    end_time: _dt.datetime | None = None
    time_to_start: float | None = None
    max_runtime: int | None = None
    stale_timeout: int | None = None
    url: str = ""
    public_url: str = ""

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> TaskRecord:
        """A record from the API's JSON (timestamps as ISO strings) or the store's rows (epoch seconds)."""
        tts = body.get("time_to_start")
        return cls(
            id=str(body["id"]),
            organization=str(body.get("organization") or ""),
            project=str(body.get("project") or ""),
            name=str(body.get("name") or ""),
            status=Status(body.get("status") or "pending"),
            value=body.get("value"),
            value_max=body.get("value_max", 100) if body.get("value_max") is not None else 100,
            value_percent=body.get("value_percent"),
            data=body.get("data"),
            tags=dict(body.get("tags") or {}),
            parent=body.get("parent"),
            queue=body.get("queue"),
            external_id=body.get("external_id"),
            ref=body.get("ref"),
            created=from_epoch(_epoch(body.get("created"))),
            updated=from_epoch(_epoch(body.get("updated"))),
            start_time=from_epoch(_epoch(body.get("start_time"))),
            end_time=from_epoch(_epoch(body.get("end_time"))),
            time_to_start=None if tts in (None, "") else float(tts),
            max_runtime=body.get("max_runtime"),
            stale_timeout=body.get("stale_timeout"),
            url=str(body.get("url") or ""),
            public_url=str(body.get("public_url") or ""),
        )

    def to_api(self) -> dict[str, Any]:
        """The API's JSON form of this record."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _dt.datetime):
                value = to_iso(value.timestamp())
            elif isinstance(value, Status):
                value = value.value
            elif f.name == "time_to_start" and value is not None:
                value = f"{value:.6f}"
            out[f.name] = value
        return out


@dataclasses.dataclass(frozen=True)
class ActionRecord:
    """An action: what the service does (``integration``) when a task reaches a point (``trigger``)."""

    id: int
    task: str
    trigger: str
    integration: str
    status: str = "active"
    config: Any = None
    created: _dt.datetime | None = None
    updated: _dt.datetime | None = None

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> ActionRecord:
        return cls(
            id=int(body["id"]),
            task=str(body["task"]),
            trigger=str(body["trigger"]),
            integration=str(body["integration"]),
            status=str(body.get("status") or "active"),
            config=body.get("config"),
            created=from_epoch(_epoch(body.get("created"))),
            updated=from_epoch(_epoch(body.get("updated"))),
        )

    def to_api(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("created", "updated"):
            if out[key] is not None:
                out[key] = to_iso(out[key].timestamp())
        return out
