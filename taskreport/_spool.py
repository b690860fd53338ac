"""The on-disk spool: what could not be delivered before a process exited, for the next one to send.

One JSON file of plain records per exiting process under ``$TASKREPORT_HOME/spool``, written atomically
(a temporary file, fsync, rename; the temporary file is removed if writing fails). A process reporting to
the same place claims files by renaming them (so two processes never both deliver one), and removes a file
once everything in it was delivered or written to its own file. A claim left by a process that died is
taken over.

A record: ``{"ref", "id", "create", "update", "parent_ref", "parent_id", "name"}`` — ``create`` holds the
fields of a create that was never acknowledged (sent again as it was: a replay changes nothing), ``update``
the changes made since.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from ._pending import Entry
from ._refs import is_ref, new_ref

_CLAIMED = re.compile(r"\.claimed-(\d+)-([0-9a-f]+)$")
VERSION = 2
#: names this process's files: a pid alone repeats (every container's first process is pid 1)
_token = os.urandom(6).hex()

Record = dict[str, Any]


def _new_token() -> None:
    global _token
    _token = os.urandom(6).hex()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_token)


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


# -- records ------------------------------------------------------------------------------------------
def record_of(entry: Entry, fields: dict[str, Any]) -> Record:
    """What a next process needs to deliver this change of ``entry``."""
    create: dict[str, Any] | None = None
    update: dict[str, Any] | None = dict(fields) or None
    if entry.creates:
        if entry.birth is not None:
            create = dict(entry.birth)
        else:
            create, update = dict(fields), None
    parent = entry.parent
    return {
        "ref": entry.ref,
        "id": entry.id,
        "create": create,
        "update": update,
        "parent_ref": parent.ref if parent is not None else None,
        "parent_id": parent.id if parent is not None else entry.parent_id,
        "name": entry.name_hint,
    }


def worth_keeping(records: list[Record]) -> list[Record]:
    """The records that still carry something: a create, an update, or the id of a parent that a child among
    them names by reference only. A change still on its way at exit is spooled in case it never arrives;
    when its answer came in the meantime, nothing of it is left to send, and its record is dropped."""
    named = {r["parent_ref"] for r in records if r["parent_ref"] is not None and r["parent_id"] is None}
    return [r for r in records if r["create"] is not None or r["update"] is not None or r["ref"] in named]


def entries_of(records: list[Record]) -> list[tuple[Entry, dict[str, Any]]]:
    """Entries (and their changes) that deliver spooled records through the normal path. A parent spooled
    with its child is linked to it, so that the child can follow it with its id where ids are needed."""
    out: list[tuple[Entry, dict[str, Any]]] = []
    by_ref: dict[str, Entry] = {}
    parents: list[tuple[Entry, str]] = []
    for record in records:
        ref = record.get("ref")
        if not is_ref(ref):
            continue
        create = record.get("create")
        entry = Entry(
            str(ref),
            {},
            born_here=isinstance(create, dict),
            task_id=record.get("id") or None,
            parent_id=record.get("parent_id") or None,
            name_hint=record.get("name") or None,
        )
        if isinstance(create, dict):
            entry.birth = create
        parent_ref = record.get("parent_ref")
        if is_ref(parent_ref) and not record.get("parent_id"):
            parents.append((entry, str(parent_ref)))
        by_ref[entry.ref] = entry
        update = record.get("update")
        out.append((entry, dict(update) if isinstance(update, dict) else {}))
    for entry, parent_ref in parents:
        entry.parent = by_ref.get(parent_ref) or Entry(parent_ref, {}, born_here=False)
    return out


def _from_v1(body: dict[str, Any]) -> list[Record]:
    """Files written by taskreport before task references: tasks keyed within the file."""
    refs: dict[str, str] = {}
    for entry in body.get("entries") or []:
        key = entry.get("idempotency_key")
        refs[str(entry.get("key"))] = key if is_ref(key) else new_ref()
    records = []
    for entry in body.get("entries") or []:
        fields = dict(entry.get("fields") or {})
        task_id = entry.get("task_id")
        parent_key = entry.get("parent_key")
        records.append({
            "ref": refs[str(entry.get("key"))],
            "id": task_id,
            "create": None if task_id else fields,
            "update": fields if task_id else None,
            "parent_ref": refs.get(str(parent_key)) if parent_key else None,
            "parent_id": fields.pop("parent", None) if isinstance(fields.get("parent"), str) else None,
            "name": None,
        })
    return records


# -- files ---------------------------------------------------------------------------------------------
def write(directory: Path, target: str, records: list[Record]) -> Path | None:
    """Spool records; returns the file written, or None if there was nothing to keep."""
    if not records:
        return None
    # task data may be private: the spool is the owner's alone from the moment it exists
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"{time.time():.6f}-{os.getpid()}-{_token}-{os.urandom(4).hex()}.json"
    tmp = directory / f".{name}.tmp"
    body = {"version": VERSION, "target": target, "records": records}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(fd, "w", encoding="utf-8") as fh:
            json.dump(body, fh, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        path = directory / name
        os.replace(tmp, path)
    except BaseException:
        # a full disk must not leave empty temporary files behind, one per failed exit
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def claim(directory: Path, target: str) -> list[tuple[Path, list[Record]]]:
    """Take this process's share of the spool: files for the same target, in the order they were written."""
    if not directory.is_dir():
        return []
    claimed: list[tuple[Path, list[Record]]] = []
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
                continue  # this process's own: it still holds live handles for what it spooled
            base = name
        else:
            continue
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(body, dict) or body.get("target") != target:
            continue
        target_path = directory / f"{base}.claimed-{me}-{_token}"
        try:
            os.rename(path, target_path)
        except OSError:
            continue  # another process claimed it first
        records = body.get("records") if body.get("version") == VERSION else _from_v1(body)
        claimed.append((target_path, [r for r in records or [] if isinstance(r, dict)]))
    return claimed
