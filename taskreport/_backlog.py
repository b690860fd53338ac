"""Spooled changes of earlier processes, claimed by this one and sent after its own.

A large spool must not starve the process that claims it: each round takes this process's own changes
first and at most one batch of the backlog, and an exit never waits for the backlog. What is left of it is
written, with the process's own leftovers, to one new spool file before the claimed files are removed, so
that a spooled task is in exactly one file.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

from . import _spool
from ._pending import Entry, merge_fields

logger = logging.getLogger("taskreport")


class Backlog:
    def __init__(self, directory: Path, target: str) -> None:
        self.directory = directory
        self.target = target
        self._lock = threading.Lock()
        self._items: dict[Entry, dict[str, Any]] = {}
        self._files: list[Path] = []

    def __len__(self) -> int:
        return len(self._items)

    def claim(self) -> int:
        """Claim the spool's files for this target; returns how many records they held."""
        claims = _spool.claim(self.directory, self.target)
        count = 0
        with self._lock:
            for path, records in claims:
                self._files.append(path)
                for entry, fields in _spool.entries_of(records):
                    self._items[entry] = fields
                    count += 1
        return count

    def take(self, limit: int) -> list[tuple[Entry, dict[str, Any]]]:
        with self._lock:
            out = []
            for entry in list(self._items)[:limit]:
                out.append((entry, self._items.pop(entry)))
            return out

    def put_back(self, items: list[tuple[Entry, dict[str, Any]]]) -> None:
        with self._lock:
            for entry, fields in items:
                newer = self._items.get(entry)
                self._items[entry] = fields if newer is None else merge_fields(fields, newer)

    def release_if_done(self, busy: bool) -> None:
        """Remove the claimed files once everything in them was delivered (``busy``: a round still carries
        some of it)."""
        with self._lock:
            if self._items or busy or not self._files:
                return
            files, self._files = self._files, []
        for path in files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def adopt(self, items: list[tuple[Entry, dict[str, Any]]], files: list[Path]) -> None:
        """Take over another backlog's claims (``init()`` again, to the same place)."""
        self.put_back(items)
        with self._lock:
            self._files.extend(files)

    def drain(self) -> tuple[list[tuple[Entry, dict[str, Any]]], list[Path]]:
        """Everything left, and the files it came from (to remove once it is written elsewhere)."""
        with self._lock:
            items, self._items = list(self._items.items()), {}
            files, self._files = self._files, []
        return items, files
