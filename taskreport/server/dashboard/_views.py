"""What the templates show: times, durations, progress, statuses and a task's data as a tree."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from ..._models import value_percent
from ..._status import RUNNING, TERMINAL

STATUS_LABELS = {
    "pending": "Pending",
    "pre_processing": "Pre-processing",
    "processing": "Processing",
    "post_processing": "Post-processing",
    "success": "Success",
    "error": "Error",
    "cancelled": "Cancelled",
    "stale": "Stale",
}
#: the status filter's choices: groups first, then each status
STATUS_CHOICES = [
    ("", "Any status"),
    ("active", "Active (pending or running)"),
    ("running", "Running"),
    ("finished", "Finished"),
    *STATUS_LABELS.items(),
]
STATUS_GROUPS = {
    "active": ["pending", *sorted(RUNNING)],
    "running": sorted(RUNNING),
    "finished": sorted(TERMINAL),
}
#: the data keys shown in sections of their own rather than in the tree
OUTPUT_KEY = "output"
LOGS_KEY = "logs"
#: how much of a task's data the tree shows: keys per object, items per list, characters per string
TREE_ITEMS = 200
TREE_TEXT = 2000
TREE_DEPTH = 12


def iso(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def shown_time(epoch: float | None) -> str:
    """UTC, as the page shows it before its script turns it into the reader's local time."""
    if epoch is None:
        return ""
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def elapsed(task: dict[str, Any], now: float) -> dict[str, Any]:
    """What the time column says: how long it ran (ended), has been running, or has waited."""
    start, end = task.get("start_time"), task.get("end_time")
    if end is not None:
        began = start if start is not None else task["created"]
        return {"label": "took", "seconds": end - began, "start": began, "end": end}
    if start is not None:
        return {"label": "running for", "seconds": now - start, "start": start, "end": None}
    return {"label": "waiting for", "seconds": now - task["created"], "start": task["created"], "end": None}


def percent(task: dict[str, Any]) -> int | None:
    return value_percent(task.get("value"), task.get("value_max"))


def progress_text(task: dict[str, Any]) -> str:
    value, value_max = task.get("value"), task.get("value_max")
    if value is None:
        return "no progress reported"
    pct = percent(task)
    return f"{value} / {value_max} ({pct}%)" if pct is not None else f"{value} / {value_max}"


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status)


def tree(value: Any, depth: int = 0) -> dict[str, Any]:
    """A JSON value as nested nodes for the template: ``{"kind", "items" | "text", "more"}``."""
    if depth >= TREE_DEPTH:
        return {"kind": "text", "text": json.dumps(value, ensure_ascii=False)[:TREE_TEXT], "more": 0}
    if isinstance(value, dict):
        items = list(value.items())
        return {
            "kind": "object",
            "items": [(str(k), tree(v, depth + 1)) for k, v in items[:TREE_ITEMS]],
            "more": max(0, len(items) - TREE_ITEMS),
            "size": len(items),
        }
    if isinstance(value, list):
        return {
            "kind": "list",
            "items": [(str(i), tree(v, depth + 1)) for i, v in enumerate(value[:TREE_ITEMS])],
            "more": max(0, len(value) - TREE_ITEMS),
            "size": len(value),
        }
    if isinstance(value, str):
        return {"kind": "string", "text": value[:TREE_TEXT], "more": max(0, len(value) - TREE_TEXT)}
    if value is None:
        return {"kind": "null", "text": "null", "more": 0}
    if isinstance(value, bool):
        return {"kind": "bool", "text": "true" if value else "false", "more": 0}
    return {"kind": "number", "text": str(value), "more": 0}


def split_data(data: Any) -> tuple[Any, str | None, list[dict[str, Any]] | None]:
    """A task's data without the output and log tails, the output tail (``taskreport run``), the log records
    (the logging integration): each None when absent."""
    if not isinstance(data, dict):
        return data, None, None
    rest = dict(data)
    output = rest.pop(OUTPUT_KEY, None)
    rest.pop("output_bytes", None) if isinstance(output, str) else None
    logs = rest.pop(LOGS_KEY, None)
    if not isinstance(output, str):
        if output is not None:
            rest[OUTPUT_KEY] = output
        output = None
    if not (isinstance(logs, list) and all(isinstance(r, dict) for r in logs)):
        if logs is not None:
            rest[LOGS_KEY] = logs
        logs = None
    return (rest or None), output, logs


def log_rows(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for record in records:
        when = record.get("time")
        rows.append(
            {
                "time": shown_time(when) if isinstance(when, (int, float)) else str(when or ""),
                "iso": iso(when) if isinstance(when, (int, float)) else "",
                "level": str(record.get("level", "")),
                "logger": str(record.get("logger", "")),
                "message": str(record.get("message", "")),
            }
        )
    return rows


def status_filters(values: list[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        for status in STATUS_GROUPS.get(value, [value] if value else []):
            if status not in out:
                out.append(status)
    return out
