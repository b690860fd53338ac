"""``progress(items)``: a loop reported as a task of its own, like tqdm (``task.iter(items)`` counts into a task
you hold). The counting itself, a few ns per item, is in ``_counting``.
"""

from __future__ import annotations

import contextvars
import inspect
import math
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar

from . import _client as _client_mod
from ._context import current as _current
from ._counting import counted, total_of
from ._errors import ValidationError
from ._task import DisabledTask, Task
from ._tracking import check_fields, finish, reset, start
from ._validation import INT64_MAX

T = TypeVar("T")

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
        return counted(t, self._iterable, total, self)

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
    here = inspect.currentframe()
    frame = here.f_back.f_back if here is not None and here.f_back is not None else None
    if frame is None:  # pragma: no cover - called from the outermost frame, or no frames in this Python
        return "progress"
    module = frame.f_globals.get("__name__") or ""
    code = frame.f_code
    function = getattr(code, "co_qualname", code.co_name)
    if function == "<module>":
        return str(module) or "progress"
    return f"{module}.{function}" if module else str(function)
