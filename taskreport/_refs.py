"""Task references: names for tasks that exist from the moment a task is created, in any process.

A reference is made without I/O and without a lock: a random prefix per process (80 bits, made again in a
forked child) followed by a counter. Another process can use it as a parent, or attach to the task and
update it, before the service has heard of the task at all.
"""

from __future__ import annotations

import itertools
import os
import re

#: what a reference may look like when it comes from elsewhere (an environment variable, a Celery header)
REF_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")

_prefix = os.urandom(10).hex()
_counter = itertools.count(1)


def _new_prefix() -> None:
    global _prefix, _counter
    _prefix = os.urandom(10).hex()
    _counter = itertools.count(1)


if hasattr(os, "register_at_fork"):
    # a child shares its parent's prefix and counter position: without this, both would make the same refs
    os.register_at_fork(after_in_child=_new_prefix)


def new_ref() -> str:
    """A new, unique task reference."""
    return f"{_prefix}{next(_counter):06x}"


def is_ref(value: object) -> bool:
    return isinstance(value, str) and REF_PATTERN.fullmatch(value) is not None
