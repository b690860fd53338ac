"""``@track`` and ``with task(...)``: a task per call or per block, with its status following the code.

The task is created ``processing`` when the body starts, ends ``success`` when it returns, ``error`` when it
raises (with the exception in ``data``) and ``cancelled`` when it is interrupted (KeyboardInterrupt,
``asyncio.CancelledError``, a generator closed early). While the body runs the task is the current one, so
tasks created inside it become its children. Reporting never changes what the user's code returns or raises.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import sys
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

from . import _client as _client_mod
from . import _internal
from ._context import current as _current
from ._errors import ValidationError
from ._task import DisabledTask, Task
from ._validation import validate_task

logger = logging.getLogger("taskreport")

F = TypeVar("F", bound=Callable[..., Any])

def cancelling(exc: BaseException) -> bool:
    """Whether ``exc`` ends a task as ``cancelled`` rather than ``error``: the work was stopped, it did not
    fail. asyncio is looked up, not imported: code that was cancelled by it has imported it already, and
    importing it here would cost every ``import taskreport`` ~15 ms."""
    if isinstance(exc, (KeyboardInterrupt, GeneratorExit)):
        return True
    aio = sys.modules.get("asyncio")
    return aio is not None and isinstance(exc, aio.CancelledError)


# -- shared by the decorator, the context manager and progress() ---------------------------------------
def start(
    client: _client_mod.Client,
    name: str,
    fields: Mapping[str, Any],
    heartbeat: float | None,
    status: str = "processing",
) -> Task:
    """A new task, ``processing`` from now. Creating it may not break the user's code: on failure (a
    ``before_create`` hook raising, say) the code runs untracked, unless the client is strict."""
    try:
        return client.create_task(name, heartbeat=heartbeat, status=status, **fields)
    except Exception:
        if client.config.strict:
            raise
        logger.exception("taskreport: could not create the task %r; running it untracked", name)
        return DisabledTask(name)


def finish(task: Task, exc: BaseException | None, **fields: Any) -> None:
    """End ``task`` according to how its code ended. Never raises: the user's outcome must win."""
    try:
        if exc is None:
            task.success(**fields)
        elif cancelling(exc):
            task.cancel(**fields)
        elif isinstance(exc, SystemExit) and exc.code in (None, 0):
            # sys.exit() or sys.exit(0) from tracked code is a normal end of the work
            task.success(**fields)
        else:
            task.error(exc, **fields)
    except Exception as exc:
        _internal.report(f"could not record the end of {task!r}", exc)


def reset(token: contextvars.Token[Task | None]) -> None:
    # not contextlib.suppress: this runs on every tracked call, and it would cost more than the reset itself
    try:  # noqa: SIM105
        _current.reset(token)
    except (ValueError, RuntimeError):
        # the token belongs to another context (a generator finalised elsewhere): that context is gone or not
        # ours to change
        pass


def check_fields(name: str | None, fields: Mapping[str, Any], heartbeat: float | None) -> None:
    """Reject bad task fields where they are written (at decoration), not at the first call."""
    if "status" in fields:
        raise ValidationError("is set by the code's outcome; it cannot be given here.", attr="status")
    probe = {"name": "probe", **fields}
    if name is not None:
        probe["name"] = name
    validate_task(probe, partial=False)
    if heartbeat is not None and (
        isinstance(heartbeat, bool) or not isinstance(heartbeat, (int, float)) or not heartbeat > 0
    ):
        raise ValidationError(f"must be a positive number of seconds, not {heartbeat!r}.", attr="heartbeat")


# -- the decorator -------------------------------------------------------------------------------------
@overload
def track(func: F, /) -> F: ...


@overload
def track(name: str | None = None, /, *, heartbeat: float | None = None, **fields: Any) -> Callable[[F], F]: ...


def track(func: Any = None, /, *, name: str | None = None, heartbeat: float | None = None, **fields: Any) -> Any:
    """Report each call of the decorated function as a task.

    ``@track``, ``@track("name")`` or ``@track(name="name", heartbeat=30, tags={...}, ...)``. Works on
    functions, methods, classmethods, staticmethods, coroutines, generators and async generators. The name
    defaults to ``module.qualname``; invalid fields raise :class:`~taskreport.ValidationError` here.
    """
    if isinstance(func, str):
        if name is not None:
            raise TypeError("track() got the name both as an argument and as name=")
        name, func = func, None
    check_fields(name, fields, heartbeat)
    if func is None:

        def decorate(function: F) -> F:
            decorated: F = _decorate(function, name, fields, heartbeat)
            return decorated

        return decorate
    if not callable(func) and not isinstance(func, (classmethod, staticmethod)):
        raise TypeError(f"track() decorates functions, not {type(func).__name__}")
    return _decorate(func, name, fields, heartbeat)


def _decorate(func: Any, name: str | None, fields: dict[str, Any], heartbeat: float | None) -> Any:
    # a classmethod/staticmethod object hides the function, and with it the kind of callable
    target = func.__func__ if isinstance(func, (classmethod, staticmethod)) else func
    if name is None:
        module = getattr(target, "__module__", None) or ""
        # a callable object has no qualname of its own: its class names it
        qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
        name = (f"{module}.{qualname}" if module else qualname)[-255:]
    fields = dict(fields)
    if inspect.isasyncgenfunction(target):
        wrapper = _async_gen_wrapper(name, fields, heartbeat)
    elif inspect.iscoroutinefunction(target):
        wrapper = _coroutine_wrapper(name, fields, heartbeat)
    elif inspect.isgeneratorfunction(target):
        wrapper = _gen_wrapper(name, fields, heartbeat)
    else:
        wrapper = _sync_wrapper(name, fields, heartbeat)
    # imported here, not with the package: wrapt 2 brings asyncio along, which is most of its import time
    import wrapt

    # wrapt asks enabled() first and, when it says no, calls the function directly: the cheapest passthrough
    return wrapt.FunctionWrapper(func, wrapper, enabled=_enabled)


def _enabled() -> bool:
    return not _client_mod.get_client().disabled


Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


def _sync_wrapper(name: str, fields: dict[str, Any], heartbeat: float | None) -> Wrapper:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cl = _client_mod.get_client()
        if cl.disabled:
            return wrapped(*args, **kwargs)
        task = start(cl, name, fields, heartbeat)
        token = _current.set(task)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            finish(task, exc)
            raise
        finally:
            reset(token)
        finish(task, None)
        return result

    return wrapper


def _coroutine_wrapper(name: str, fields: dict[str, Any], heartbeat: float | None) -> Wrapper:
    async def run(cl: _client_mod.Client, wrapped: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        # runs when the coroutine is first awaited, in the context of the asyncio task awaiting it
        task = start(cl, name, fields, heartbeat)
        token = _current.set(task)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            finish(task, exc)
            raise
        finally:
            reset(token)
        finish(task, None)
        return result

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cl = _client_mod.get_client()
        if cl.disabled:
            return wrapped(*args, **kwargs)
        return run(cl, wrapped, args, kwargs)

    return wrapper


def _gen_wrapper(name: str, fields: dict[str, Any], heartbeat: float | None) -> Wrapper:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cl = _client_mod.get_client()
        if cl.disabled:
            return wrapped(*args, **kwargs)
        # the parent and scope are the caller's, even if the generator is first iterated somewhere else
        ctx = contextvars.copy_context()
        return _drive(wrapped(*args, **kwargs), lambda: ctx.run(start, cl, name, fields, heartbeat))

    return wrapper


def _drive(gen: Generator[Any, Any, Any], make_task: Callable[[], Task]) -> Generator[Any, Any, Any]:
    """Run ``gen`` step by step with its task current only while its own code runs: ``yield from`` would
    leave the task current in the consumer's code between items."""
    task = make_task()  # at the first next(): that is when the body starts
    send, throw = gen.send, gen.throw
    arg: Any = None
    thrown: BaseException | None = None
    while True:
        token = _current.set(task)
        try:
            item = send(arg) if thrown is None else throw(thrown)
        except StopIteration as stop:
            finish(task, None)
            return stop.value
        except BaseException as exc:
            finish(task, exc)
            raise
        finally:
            reset(token)
        thrown = None
        try:
            arg = yield item
        except GeneratorExit as closing:
            token = _current.set(task)
            try:
                gen.close()
            except BaseException as exc:
                finish(task, exc)
                raise
            finally:
                reset(token)
            finish(task, closing)
            raise
        except BaseException as exc:
            thrown = exc


def _async_gen_wrapper(name: str, fields: dict[str, Any], heartbeat: float | None) -> Wrapper:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cl = _client_mod.get_client()
        if cl.disabled:
            return wrapped(*args, **kwargs)
        ctx = contextvars.copy_context()
        return _adrive(wrapped(*args, **kwargs), lambda: ctx.run(start, cl, name, fields, heartbeat))

    return wrapper


async def _adrive(agen: AsyncGenerator[Any, Any], make_task: Callable[[], Task]) -> AsyncGenerator[Any, Any]:
    """The async generator counterpart of :func:`_drive`."""
    task = make_task()
    asend, athrow = agen.asend, agen.athrow
    arg: Any = None
    thrown: BaseException | None = None
    while True:
        token = _current.set(task)
        try:
            item = await (asend(arg) if thrown is None else athrow(thrown))
        except StopAsyncIteration:
            finish(task, None)
            return
        except BaseException as exc:
            finish(task, exc)
            raise
        finally:
            reset(token)
        thrown = None
        try:
            arg = yield item
        except GeneratorExit as closing:
            token = _current.set(task)
            try:
                await agen.aclose()
            except BaseException as exc:
                finish(task, exc)
                raise
            finally:
                reset(token)
            finish(task, closing)
            raise
        except BaseException as exc:
            thrown = exc


# -- the context manager -------------------------------------------------------------------------------
class task:  # lower case: used like a function, ``with taskreport.task("name") as t``
    """``with task(name, **fields) as t:`` (or ``async with``): report a block as a task.

    Same semantics as :func:`track`; ``t`` is the :class:`~taskreport.Task`. Also a decorator:
    ``@task("name")`` is ``@track("name")``. Invalid fields raise :class:`~taskreport.ValidationError` here.
    """

    __slots__ = ("_fields", "_heartbeat", "_name", "_open")

    def __init__(self, name: str, /, *, heartbeat: float | None = None, **fields: Any) -> None:
        check_fields(name, fields, heartbeat)
        self._name = name
        self._heartbeat = heartbeat
        self._fields = fields
        # a stack, so that one task(...) object can be entered again (or re-entered) safely
        self._open: list[tuple[Task, contextvars.Token[Task | None] | None]] = []

    def __repr__(self) -> str:
        return f"<taskreport.task {self._name!r}>"

    def __enter__(self) -> Task:
        cl = _client_mod.get_client()
        if cl.disabled:
            t: Task = DisabledTask(self._name)
            self._open.append((t, None))
            return t
        t = start(cl, self._name, self._fields, self._heartbeat)
        self._open.append((t, _current.set(t)))
        return t

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        t, token = self._open.pop()
        if token is None:
            return
        reset(token)
        finish(t, exc)

    async def __aenter__(self) -> Task:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        decorated: F = track(self._name, heartbeat=self._heartbeat, **self._fields)(func)
        return decorated
