"""The on-disk spool: what could not be delivered before a process exited, for the next one to send.

One JSON file per exiting process under ``$TASKREPORT_HOME/spool``, written atomically. A process that starts
reporting to the same place claims files by renaming them (so two processes never both deliver one), and
removes a file once everything in it was delivered. A claim left by a process that died is taken over.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config import Config

if TYPE_CHECKING:
    from ._client import Client
    from ._task import Task

_CLAIMED = re.compile(r"\.claimed-(\d+)-([0-9a-f]+)$")
#: names this process's files: a pid alone repeats (every container's first process is pid 1)
_token = uuid.uuid4().hex[:12]


def _new_token() -> None:
    global _token
    _token = uuid.uuid4().hex[:12]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_token)


def spool_dir(config: Config) -> Path:
    return config.home / "spool"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return True


def _writer_token(name: str) -> str | None:
    parts = name.removesuffix(".json").split("-")
    return parts[2] if len(parts) >= 3 else None


def write(config: Config, items: list[tuple[Task, dict[str, Any]]]) -> Path | None:
    """Spool undelivered tasks; returns the file written, or None if there was nothing to keep."""
    if not items:
        return None
    keys = {id(task): f"t{i}" for i, (task, _) in enumerate(items)}
    entries = []
    for task, fields in items:
        fields = dict(fields)
        parent = fields.get("parent")
        parent_key = None
        if parent is not None and not isinstance(parent, str):
            if parent._id is not None:
                fields["parent"] = parent._id
            else:
                fields.pop("parent")
                parent_key = keys.get(id(parent))
        entries.append(
            {
                "key": keys[id(task)],
                "task_id": task._id,
                "fields": fields,
                "parent_key": parent_key,
                # an in-flight create may have landed: the next process's create must find it, not repeat it
                "idempotency_key": task._key,
            }
        )
    directory = spool_dir(config)
    # task data may be private: the spool is the owner's alone from the moment it exists
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"{time.time():.6f}-{os.getpid()}-{_token}-{uuid.uuid4().hex[:8]}.json"
    tmp = directory / f".{name}.tmp"
    body = {"version": 1, "target": config.target, "entries": entries}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "w", encoding="utf-8") as fh:
        json.dump(body, fh, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    path = directory / name
    os.replace(tmp, path)
    return path


def claim(config: Config) -> list[tuple[Path, list[dict[str, Any]]]]:
    """Take this process's share of the spool: files for the same target, in the order they were written."""
    directory = spool_dir(config)
    if not directory.is_dir():
        return []
    claimed: list[tuple[Path, list[dict[str, Any]]]] = []
    me = os.getpid()
    for path in sorted(directory.iterdir()):
        name = path.name
        if name.startswith("."):
            continue
        match = _CLAIMED.search(name)
        if match:
            pid, token = int(match.group(1)), match.group(2)
            # a claim is live while its process is: this one, or another whose pid is alive (with the same pid
            # and another token, it was an earlier process that reused this pid, now gone)
            if token == _token or (pid != me and _pid_alive(pid)):
                continue
            base = name[: match.start()]
        elif name.endswith(".json"):
            if _writer_token(name) == _token:
                # this process still holds live handles for what it spooled; the next process delivers it
                continue
            base = name
        else:
            continue
        target = directory / f"{base}.claimed-{me}-{_token}"
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if body.get("target") != config.target:
            continue
        try:
            os.rename(path, target)
        except OSError:
            continue  # another process claimed it first
        claimed.append((target, list(body.get("entries") or [])))
    return claimed


def tasks_from_entries(client: Client, entries: list[dict[str, Any]]) -> list[Task]:
    """Task handles, pending, that deliver spooled entries through the normal flusher path."""
    from ._task import Task

    tasks: dict[str, Task] = {}
    for entry in entries:
        fields = dict(entry.get("fields") or {})
        task = Task(client, {} if entry.get("task_id") else fields, task_id=entry.get("task_id"))
        if task._id is not None:
            task._dirty = fields
        task._key = entry.get("idempotency_key")
        tasks[entry["key"]] = task
    for entry in entries:
        parent_key = entry.get("parent_key")
        if parent_key and parent_key in tasks:
            task = tasks[entry["key"]]
            task._state["parent"] = tasks[parent_key]
    return list(tasks.values())
