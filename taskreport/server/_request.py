"""One request: its context, its body (size limit, read timeout), its JSON, and the checks of input that
every endpoint shares."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import Any

from starlette.requests import ClientDisconnect, Request

from .._errors import PayloadTooLarge, TaskReportError, UnsupportedMediaType, ValidationError
from .._store import TokenInfo
from .._store._triggers import check_action
from .._validation import INT64_MAX, validate_task
from ._responses import is_json_type, media_type

#: how deeply a request body may nest lists and objects
MAX_JSON_DEPTH = 100
_FORM_TYPE = "application/x-www-form-urlencoded"


class RequestTimeout(TaskReportError):
    """The client stopped sending its request's body (408); the connection is closed after the answer."""

    status_code = 408
    default_code = "request_timeout"


class Ctx:
    """One request, once routed and authenticated."""

    __slots__ = ("base", "info", "key_project", "method", "params", "request")

    def __init__(self, request: Request, base: str) -> None:
        self.request = request
        self.params: dict[str, Any] = dict(request.path_params)
        self.base = base
        self.method = request.method
        self.info: TokenInfo | None = None
        #: (organization, project) when the credential was a project key: it is good for that project only
        self.key_project: tuple[str, str] | None = None


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than {limit} bytes.")


class _Overdue:
    """The requests of one event loop that are reading a body, each with the time its next part is due, and
    one check every quarter of a timeout (at most every second) that cancels those overdue. A timer of the
    loop's for each part (call_later, then cancel) cost a small PATCH a twentieth of its time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due: dict[asyncio.Task[Any], float] = {}
        #: tasks cancelled here, so that their reader can tell its own timeout from any other cancellation
        self.stalled: set[asyncio.Task[Any]] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._period = 1.0

    def watch(self, task: asyncio.Task[Any], timeout: float) -> None:
        self.due[task] = self.loop.time() + timeout
        period = min(1.0, timeout / 4)
        if self._handle is None or period < self._period:
            if self._handle is not None:
                self._handle.cancel()
            self._period = period
            self._handle = self.loop.call_later(period, self._check)

    def forget(self, task: asyncio.Task[Any]) -> None:
        self.due.pop(task, None)

    def _check(self) -> None:
        self._handle = None
        now = self.loop.time()
        for task, due in list(self.due.items()):
            if due <= now:
                del self.due[task]
                self.stalled.add(task)
                task.cancel()
        if self.due:
            self._handle = self.loop.call_later(self._period, self._check)
        else:
            self._period = 1.0


#: one per event loop (servers in tests each run their own)
_OVERDUE: dict[int, _Overdue] = {}


def _overdue(loop: asyncio.AbstractEventLoop) -> _Overdue:
    watch = _OVERDUE.get(id(loop))
    if watch is None or watch.loop is not loop:
        for key, other in list(_OVERDUE.items()):
            if other.loop.is_closed():
                _OVERDUE.pop(key, None)  # another loop's thread may be doing the same
        watch = _OVERDUE[id(loop)] = _Overdue(loop)
    return watch


async def read_body(request: Request, *, limit: int, timeout: float) -> bytes:
    """The whole body, at most ``limit`` bytes (413 beyond), each part arriving within ``timeout`` seconds of
    the one before (408 otherwise: a body shorter than its Content-Length would hold the request forever;
    noticed within a quarter of ``timeout`` more). A client that goes away raises starlette's
    ``ClientDisconnect``."""
    task = asyncio.current_task()
    assert task is not None
    watch = _overdue(asyncio.get_running_loop())
    chunks: list[bytes] = []
    size = 0
    receive = request.receive
    try:
        while True:
            watch.watch(task, timeout)
            try:
                message = await receive()
            except asyncio.CancelledError:
                if task in watch.stalled:
                    watch.stalled.discard(task)
                    raise RequestTimeout(f"The request body did not arrive within {timeout:g} seconds.") from None
                raise
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    finally:
        watch.forget(task)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _too_deep(data: Any, limit: int) -> bool:
    """Whether ``data`` nests lists and objects more than ``limit`` levels deep (walked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json(body: bytes) -> Any:
    too_deep = f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep"
    try:
        if body[:1] == b"{" and b"\x00" not in body[:4]:
            # UTF-8, as json.loads would find (it looks for a BOM and for the NULs of UTF-16 and UTF-32),
            # decoded as json.loads decodes it, by a decoder made once instead of for every request
            data = _DECODER.decode(body.decode("utf-8", "surrogatepass"))
        else:
            data = json.loads(body, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise ValidationError(f"JSON parse error - {exc}", code="parse_error") from None
    except RecursionError:
        # the parser recurses once per level: a body of [[[[... is the sender's error, not ours
        raise ValidationError(too_deep, code="parse_error") from None
    # a body the parser just managed could still exhaust the stack later, when validated, stored or rendered
    if _too_deep(data, MAX_JSON_DEPTH):
        raise ValidationError(too_deep, code="parse_error")
    return data


def decode_body(request: Request, body: bytes, *, form: bool = False) -> Any:
    """The body's JSON (or, with ``form``, an urlencoded form as a dict); ``{}`` when empty.

    Only an empty body stands for ``{}``: a JSON ``null``, ``[]``, ``0`` or ``""`` is what the client sent,
    refused by the endpoints as not an object."""
    if not body:
        return {}
    content_type = request.headers.get("content-type", "")
    if is_json_type(content_type):
        return parse_json(body)
    if form and media_type(content_type) == _FORM_TYPE:
        try:
            pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
        except UnicodeDecodeError:
            raise ValidationError("Form parse error - not UTF-8.", code="parse_error") from None
        return dict(pairs)
    raise UnsupportedMediaType(f"Unsupported media type \u201c{content_type.strip()}\u201d in request.")


def expect_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError(
            f'Expected a dictionary of items but got type "{type(data).__name__}".',
            code="not_a_dict",
            attr="non_field_errors",
        )
    return data


def task_fields(data: Any, *, partial: bool) -> dict[str, Any]:
    """A task body's fields, checked as ``POST .../tasks/`` (``partial=False``) or ``PATCH`` check them."""
    fields = validate_task(expect_object(data), partial=partial, unknown="ignore")
    for i, action in enumerate(fields.get("actions") or ()):
        check_action(action, prefix=f"actions.{i}.")
    return fields


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key") or None
    if key is not None and len(key) > 255:
        raise ValidationError("must have at most 255 characters.", attr="Idempotency-Key")
    return key


def positive_int(raw: str, attr: str) -> int:
    """A query parameter that must be a positive integer (digits only, within 64 bits)."""
    # at most 19 digits before int(): a longer string is out of range anyway, and int() of thousands of
    # digits raises (Python's limit on int conversion)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or not 0 < int(raw) <= INT64_MAX:
        raise ValidationError("A valid positive integer is required.", attr=attr)
    return int(raw)
