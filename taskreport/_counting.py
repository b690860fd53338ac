"""Counting items as they go by, for ``task.iter()`` and ``progress()``, at a few ns per item.

No Python code runs per item. Items come through C-level iterators only: ``chain.from_iterable`` over
``islice`` chunks of ``map(itemgetter(0), zip(items, count()))``. Python code runs once per chunk; there it
reads how many items went through (from the ``count`` object), publishes that value to the task, and sizes
the next chunk so that chunks last about ``MININTERVAL``. The value is always published when iteration ends,
however it ends, and is exact: ``zip`` pulls from the counter only after the iterable produced an item.

This module knows its task and its owner only by the methods it calls on them, so that the handle can
use it without the layers above.
"""

from __future__ import annotations

import itertools
import operator
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Counted(Protocol):
    """The task being counted into (a Task handle)."""

    @property
    def value(self) -> int | None: ...

    def set_total(self, total: int) -> None: ...

    def update(self, value: Any = ..., **fields: Any) -> None: ...


class Owner(Protocol):
    """What owns a counted loop and decides its task's status (a ``progress()``)."""

    def iteration_started(self) -> None: ...

    def iteration_ended(self, completed: bool, outcome: BaseException | None, fields: dict[str, Any]) -> None: ...


#: publish about this often (seconds) while items flow, like tqdm's mininterval
MININTERVAL = 0.1
#: how much a chunk may grow from one to the next, so a loop that slows down is not left unreported for long
MAX_GROWTH = 8

_first = operator.itemgetter(0)


def total_of(iterable: Iterable[Any] | None, total: int | None) -> int | None:
    if total is not None or iterable is None:
        return total
    try:
        return len(iterable)  # type: ignore[arg-type]
    except (TypeError, AttributeError):
        return None


def counted(task: Counted, iterable: Iterable[T], total: int | None, owner: Owner | None) -> Iterator[T]:
    base = task.value or 0
    if total is not None:
        task.set_total(base + total)
    counter = itertools.count()
    source: Iterator[T] = map(_first, zip(iterable, counter, strict=False))
    return itertools.chain.from_iterable(_chunks(task, source, counter, base, total, owner))


def _chunks(
    task: Counted, source: Iterator[T], counter: Iterator[int], base: int, total: int | None, owner: Owner | None
) -> Iterator[Iterator[T]]:
    # ``next(counter)`` tells how many items zip took, plus the number of times we read it before
    reads = 0
    published = 0
    chunk = 1
    exhausted = False
    outcome: BaseException | None = None
    if owner is not None:
        owner.iteration_started()
    last = time.monotonic()
    try:
        while True:
            yield itertools.islice(source, chunk)
            count = next(counter) - reads
            reads += 1
            if count - published < chunk:
                exhausted = True
                return
            now = time.monotonic()
            task.update(value=base + count)
            elapsed = now - last
            if elapsed > 0:
                chunk = max(1, min(int(chunk * MININTERVAL / elapsed), chunk * MAX_GROWTH))
            else:
                chunk *= MAX_GROWTH
            published, last = count, now
    except BaseException as exc:
        # GeneratorExit: the consumer stopped early (break, an exception in its loop, close())
        outcome = exc
        raise
    finally:
        count = next(counter) - reads
        fields: dict[str, Any] = {"value": base + count}
        if exhausted and total is None:
            fields["value_max"] = base + count  # now the total is known: show it as done
        if owner is None:
            task.update(**fields)
        else:
            owner.iteration_ended(exhausted or (total is not None and count >= total), outcome, fields)


