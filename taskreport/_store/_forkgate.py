"""Keeps fork() out of the middle of a database call.

SQLite holds process-wide mutexes while it works. If one thread forks while another is inside SQLite, the
child inherits those mutexes locked and its first sqlite3.connect() hangs forever. So every store
operation passes through this gate, and a fork waits (at_fork "before" hook) until none is in progress;
new operations wait while a fork is being made. The child starts with a fresh gate.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ForkGate:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._forking = False
        self._mine = threading.local()

    @contextmanager
    def passage(self) -> Iterator[None]:
        depth = getattr(self._mine, "depth", 0)
        if depth == 0:
            with self._cond:
                while self._forking:
                    self._cond.wait()
                self._active += 1
        self._mine.depth = depth + 1
        try:
            yield
        finally:
            self._mine.depth = depth
            if depth == 0:
                with self._cond:
                    self._active -= 1
                    if self._active == 0:
                        self._cond.notify_all()

    def before_fork(self) -> None:
        self._cond.acquire()
        self._forking = True
        # a thread that forks from inside a store call can't wait for itself
        own = 1 if getattr(self._mine, "depth", 0) else 0
        while self._active > own:
            self._cond.wait()

    def after_fork_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()

    def after_fork_child(self) -> None:
        self.__init__()  # type: ignore[misc]


GATE = ForkGate()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=GATE.before_fork, after_in_parent=GATE.after_fork_parent, after_in_child=GATE.after_fork_child
    )
