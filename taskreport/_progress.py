"""Progress over an iterable: ``task.iter(items)`` on a task you hold, ``progress(items)`` for a new one.

Counting must cost next to nothing per item, so no Python code runs per item. Items come through C-level
iterators only: ``chain.from_iterable`` over ``islice`` chunks of ``map(itemgetter(0), zip(items, count()))``.
Python code runs once per chunk; there it reads how many items went through (from the ``count`` object),
publishes that value to the task, and sizes the next chunk so that chunks last about ``MININTERVAL``. The
value is always published when iteration ends, however it ends, and is exact: ``zip`` pulls from the
counter only after the iterable produced an item.
"""

from __future__ import annotations

import contextvars
import itertools
import math
import operator
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar

from . import _client as _client_mod
from ._context import current as _current
from ._errors import ValidationError
from ._task import DisabledTask, Task
from ._tracking import check_fields, finish, reset, start
from ._validation import INT64_MAX

T = TypeVar("T")

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


def iterate(task: Task, iterable: Iterable[T], total: int | None = None) -> Iterator[T]:
    """Iterate ``iterable``, adding each item to ``task``'s value; ``total`` (default ``len(iterable)`` when
    it has one) is added to ``value_max``. The task's status is left to its owner."""
    if isinstance(task, DisabledTask):
        return iter(iterable)
    return _counted(task, iterable, total_of(iterable, total), None)


def _counted(task: Task, iterable: Iterable[T], total: int | None, owner: progress[Any] | None) -> Iterator[T]:
    base = task.value or 0
    if total is not None:
        task.set_total(base + total)
    counter = itertools.count()
    source: Iterator[T] = map(_first, zip(iterable, counter, strict=False))
    return itertools.chain.from_iterable(_chunks(task, source, counter, base, total, owner))


def _chunks(
    task: Task, source: Iterator[T], counter: Iterator[int], base: int, total: int | None, owner: progress[Any] | None
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


class progress(Generic[T]):  # lower case: used like a function, as tqdm is
    """``for item in progress(items, name="resize"):`` reports the loop as a task, like ``tqdm(items)``.

    The task is ``processing`` from the first item, ``success`` when the items are exhausted and
    ``cancelled`` when the loop stops early; while the loop runs it is the current task, so tracked calls in
    the loop body become its children. ``total`` defaults to ``len(items)``.

    As a context manager (``with progress(items, name=...) as p: for item in p: ...``) the block decides:
    ``success`` at its end, ``error`` if it raises (the only way an exception in the loop body is seen as one,
    since a for loop never passes it to its iterator). ``iterable`` may then be omitted, for manual
    ``p.increment()``. The task is created at the first of ``with``, iteration or reading ``.task``.

    tqdm's argument names work where they mean the same: ``desc`` (the name), ``total``, ``initial`` (the
    value to start from; ``total`` counts it in, as in tqdm), ``unit`` (kept in the task's data) and
    ``disable`` (True: iterate without reporting). Every argument is checked at the call, whether reporting is
    on or off: a bad value raises :class:`~taskreport.ValidationError` naming the argument.
    """

    __slots__ = (
        "_ctx",
        "_disabled",
        "_entered",
        "_fields",
        "_heartbeat",
        "_initial",
        "_iterable",
        "_name",
        "_task",
        "_token",
        "_total",
    )

    def __init__(
        self,
        iterable: Iterable[T] | None = None,
        name: str | None = None,
        total: float | None = None,
        *,
        desc: str | None = None,
        disable: bool | None = False,
        initial: float = 0,
        unit: str | None = None,
        heartbeat: float | None = None,
        **fields: Any,
    ) -> None:
        if desc is not None:
            if name is not None:
                raise TypeError("progress() got the name both as name= and as desc=")
            name = desc
        # every argument is checked here, reporting on or off, and a bad one raises ValidationError naming it
        _check_text("desc" if desc is not None else "name", name)
        total = _count("total", total, infinite=True)
        start = _count("initial", initial)
        _check_text("unit", unit)
        if not (disable is None or isinstance(disable, bool)):
            raise ValidationError(f"must be True or False, not {disable!r}.", attr="disable")
        if unit is not None:
            data = fields.get("data")
            if data is not None and not isinstance(data, Mapping):
                raise ValidationError("is kept in data, which must then be a mapping.", attr="unit")
            fields["data"] = {**(data or {}), "unit": unit}
        if start:
            fields["value"] = start
        check_fields(name if name is not None else "progress", fields, heartbeat)
        self._iterable = iterable
        self._task: Task | None = None
        self._token: contextvars.Token[Task | None] | None = None
        self._entered = False
        self._ctx: contextvars.Context | None = None
        self._disabled = bool(disable) or _client_mod.get_client().disabled
        self._heartbeat = heartbeat
        self._fields = fields
        self._initial = start or 0
        if self._disabled:
            # reporting is off: nothing to name or remember, and iterating is plain iteration
            self._name = name or "progress"
            self._total = total
            return
        if name is None:
            name = _caller_name()
        self._name = name
        self._total = total_of(iterable, total)
        # the task's parent and scope are where progress() was called, wherever it is iterated
        self._ctx = contextvars.copy_context()

    def __repr__(self) -> str:
        return f"<taskreport.progress {self._name!r} {self._task!r}>"

    @property
    def task(self) -> Task:
        """The task reporting this loop."""
        if self._task is None:
            self._create("pending")
        assert self._task is not None
        return self._task

    def _create(self, status: str) -> Task:
        cl = _client_mod.get_client()
        if self._disabled or self._ctx is None:
            self._task = DisabledTask(self._name)
            return self._task
        fields = dict(self._fields)
        if self._total is not None:
            fields["value_max"] = self._total  # so that the task shows its total before the first item
        self._task = self._ctx.run(start, cl, self._name, fields, self._heartbeat, status)
        return self._task

    # -- iterating -----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[T]:
        if self._iterable is None:
            raise TypeError("progress() was given no iterable to iterate")
        if self._disabled:
            return iter(self._iterable)
        t = self._task
        if t is None:
            t = self._create("processing")
        if isinstance(t, DisabledTask):
            return iter(self._iterable)
        total = self._total
        if total is not None and self._initial:
            total -= self._initial  # tqdm's meaning: the total counts the initial value in
        return _counted(t, self._iterable, total, self)

    def iteration_started(self) -> None:
        if self._entered:
            return
        t = self.task
        if t.status != "processing":
            t.processing()
        # the loop body runs in the consumer's context: being current there makes its tasks our children
        self._token = _current.set(t)

    def iteration_ended(self, completed: bool, outcome: BaseException | None, fields: dict[str, Any]) -> None:
        t = self.task
        if self._entered:
            t.update(**fields)  # the with block decides the status
            return
        token, self._token = self._token, None
        if token is not None and _current.get() is t:
            # only while still current: a loop abandoned half-way and finalised after its caller moved on must
            # not put back a task that is over by now
            reset(token)
        if completed:
            finish(t, None, **fields)
        else:
            finish(t, outcome or GeneratorExit(), **fields)

    # -- by hand -------------------------------------------------------------------------------------------
    def update(self, **fields: Any) -> None:
        self.task.update(**fields)

    def increment(self, n: int = 1) -> None:
        self.task.increment(n)

    def set_total(self, total: int) -> None:
        self.task.set_total(total)

    # -- as a context manager ------------------------------------------------------------------------------
    def __enter__(self) -> progress[T]:
        t = self._task
        if t is None:
            t = self._create("processing")
        elif t.status == "pending":
            t.processing()
        self._entered = True
        if not isinstance(t, DisabledTask):
            self._token = _current.set(t)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._entered = False
        if self._token is not None:
            reset(self._token)
            self._token = None
        t = self.task
        if not isinstance(t, DisabledTask):
            finish(t, exc)

    async def __aenter__(self) -> progress[T]:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def _check_text(argument: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ValidationError(f"must be a string, not {type(value).__name__}.", attr=argument)
    if not 1 <= len(value) <= 255:
        raise ValidationError("must have 1 to 255 characters.", attr=argument)


def _count(argument: str, value: Any, infinite: bool = False) -> int | None:
    """A number of items: a whole number from 0 (an integral float too, as tqdm takes); ``inf`` means
    unknown where tqdm says so (``total``)."""
    if value is None:
        return None
    if isinstance(value, float) and not isinstance(value, bool):
        if infinite and value == math.inf:
            return None
        if value.is_integer():
            value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
        raise ValidationError(f"must be a whole number of items (0 or more), not {value!r}.", attr=argument)
    return value


def _caller_name() -> str:
    """``module.function`` of the code calling progress(), a name that says where the loop is."""
    try:
        frame = sys._getframe(2)
    except ValueError:  # pragma: no cover - called from the outermost frame
        return "progress"
    module = frame.f_globals.get("__name__") or ""
    code = frame.f_code
    function = getattr(code, "co_qualname", code.co_name)
    if function == "<module>":
        return str(module) or "progress"
    return f"{module}.{function}" if module else str(function)
