"""The HTTP transport: the task API over keep-alive connections (see :mod:`._wire` for which client).

Delivery goes through :meth:`HttpTransport.send`. Against our server it uses the batch operation (many
changes per request, tasks named by reference); against a stock server of the API, which answers the batch
path with 404 or 405, it falls back to one standard request per change, a few at a time over separate
keep-alive connections, and tells delivery to plan by id (:class:`BatchUnsupported`).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ._errors import (
    ConfigurationError,
    ServerError,
    TaskReportError,
    TransportError,
    ValidationError,
    error_from_response,
    is_service_down,
    is_transient,
)
from ._timeutil import to_iso
from ._transport import BatchUnsupported, Op, PageResult, Row
from ._wire import Answer, Wire, WireError, client_headers, default_wire

logger = logging.getLogger("taskreport")

_TIME_FIELDS = ("start_time", "end_time")
#: operations per batch request, and the bytes a request body stays under (the server's default limit is 1 MiB)
BATCH_OPS = 1000
BATCH_BYTES = 768 * 1024
#: concurrent connections for one-request-per-change delivery (a server without the batch operation)
PARALLEL = 4
FEATURES_HEADER = "X-Taskreport-Features"


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    # only the name itself: a resolver may send *.localhost to DNS, and so to another machine
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, allow_insecure_http: bool, wire: Wire) -> None:
    """Refuse a URL the HTTP stack could read differently from us, and a token in clear text anywhere but
    this machine unless told to."""
    if "://" not in url:
        if url.startswith(("/", "./", "../", "~")) or url.endswith((".db", ".sqlite", ".sqlite3")):
            raise ConfigurationError(f"{url!r} is not a URL: for a store file, use sqlite://{url} "
                                     "(or leave the URL out for the default store)")
        raise ConfigurationError(f"{url!r} is not a URL: did you mean http://{url} (or https://{url})?")
    if any(c in url for c in "\\ \t\r\n") or any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise ConfigurationError(f"refusing the URL {url!r}: it contains a backslash, a space or a control character")
    split = urllib.parse.urlsplit(url)
    if split.scheme.lower() not in ("http", "https"):
        raise ConfigurationError(f"unsupported URL scheme {split.scheme!r}: use https:// (or http:// to localhost)")
    try:
        split.port  # noqa: B018 (raises on a port that is not a number in range)
    except ValueError as exc:
        raise ConfigurationError(f"refusing the URL {url!r}: {exc}") from None
    if split.username is not None or "@" in split.netloc:
        raise ConfigurationError("refusing a URL with a user name or password in it: pass the token instead")
    host = wire.host_of(url)  # what the client will connect to
    if not host or host.lower() != (split.hostname or "").lower():
        raise ConfigurationError(f"refusing the ambiguous URL {url!r}")
    if split.scheme.lower() == "http" and not is_loopback(host) and not allow_insecure_http:
        raise ConfigurationError(
            f"refusing to send an API token over plain HTTP to {host}: use https://, or pass "
            "allow_insecure_http=True (TASKREPORT_ALLOW_INSECURE_HTTP=1) if you really mean it"
        )


def encode_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validated fields as the API's JSON: timestamps as ISO 8601, durations as strings."""
    out = dict(fields)
    for key in _TIME_FIELDS:
        if out.get(key) is not None:
            out[key] = to_iso(out[key])
    if out.get("time_to_start") is not None:
        out["time_to_start"] = f"{out['time_to_start']:.6f}"
    return out


def _cursor_of(url: str | None) -> str | None:
    if not url:
        return None
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("cursor")
    return values[0] if values else None


def _batch_item(op: Op) -> dict[str, Any]:
    item: dict[str, Any] = {"op": op.kind, "fields": encode_fields(op.fields)}
    if op.kind == "update":
        # the library's data and tags always merge into what is there (another process may have set keys
        # this one has never seen)
        item["merge"] = True
    if op.kind == "update" and op.task_id is not None:
        item["id"] = op.task_id
    else:
        item["ref"] = op.ref
    if op.parent_ref is not None:
        item["parent_ref"] = op.parent_ref
    return item


class HttpTransport:
    """Talks to a task service (ours or any that speaks the API) over HTTPS.

    Direct calls (get, list, ...) retry connection errors, 408, 429, 502, 503 and 504 with exponential
    backoff and jitter, honouring ``Retry-After``; :meth:`send` never retries, because delivery keeps the
    latest state and decides when to try again.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        organization: str,
        project: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        allow_insecure_http: bool = False,
        wire: Wire | None = None,
    ) -> None:
        self._wire = wire if wire is not None else default_wire()
        check_url(url, allow_insecure_http, self._wire)
        self.base = url.rstrip("/")
        self.organization = organization
        self.project = project
        self.timeout = self.default_timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        #: whether the service has the batch operation and task references; None until a send tells
        self.refs: bool | None = None
        self.max_ops = BATCH_OPS
        self._headers = client_headers(token)
        self._pool: Any = None
        self.tasks_url = f"{self.base}/api/{urllib.parse.quote(organization)}/{urllib.parse.quote(project)}/tasks/"
        self.batch_url = f"{self.tasks_url}batch/"

    def __repr__(self) -> str:
        return f"<HttpTransport {self.base} {self.organization}/{self.project}>"

    # -- connections -------------------------------------------------------------------------------
    def after_fork(self) -> None:
        # the parent's sockets and threads are not ours: drop (without closing) what was inherited
        self._wire.after_fork()
        self._pool = None

    def close(self) -> None:
        self._wire.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def set_timeout(self, seconds: float | None) -> None:
        self.timeout = self.default_timeout if seconds is None else max(0.05, seconds)

    # -- requests ----------------------------------------------------------------------------------
    def _raw(
        self, method: str, url: str, *, body: Any = None, data: bytes | None = None, params: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        all_headers = dict(self._headers)
        if body is not None:
            data = json.dumps(body, allow_nan=False).encode()
            all_headers["Content-Type"] = "application/json"
        if headers:
            all_headers.update(headers)
        if params:
            url = f"{url}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            return self._wire.request(method, url, data, all_headers, self.timeout)
        except WireError as exc:
            raise TransportError(f"{method} {url}: {exc}") from exc

    def _checked(self, method: str, url: str, response: Answer) -> Any:
        status = response.status_code
        if status >= 400:
            try:
                payload = response.json()
            except ValueError:
                payload = None
            raise error_from_response(status, payload, response.headers)
        if status >= 300:
            # redirects are not followed (they would carry the token elsewhere): a proxy or a moved service
            raise TaskReportError(
                f"{method} {url}: unexpected redirect ({status}) to {response.headers.get('Location')!r}",
                status_code=status,
                code="redirect",
            )
        if self.refs is None and "refs" in response.headers.get(FEATURES_HEADER, ""):
            self.refs = True  # any answer of a server with references says so (a GET too)
        if status == 204:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ServerError(f"{method} {url}: the response is not JSON", status_code=status) from exc

    def _request_once(
        self, method: str, url: str, body: Any = None, params: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        return self._checked(method, url, self._raw(method, url, body=body, params=params, headers=headers))

    def _delay(self, attempt: int, exc: TaskReportError) -> float | None:
        """Seconds to wait before the next attempt, or None when the service asks for longer than we wait."""
        if exc.retry_after is not None:
            return exc.retry_after if exc.retry_after <= self.max_backoff else None
        cap = min(self.max_backoff, self.backoff * 2**attempt)
        return random.uniform(cap / 2, cap)

    def request(
        self, method: str, url: str, body: Any = None, params: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        attempt = 0
        while True:
            try:
                return self._request_once(method, url, body, params, headers)
            except TaskReportError as exc:
                if not is_transient(exc) or attempt >= self.retries:
                    raise
                delay = self._delay(attempt, exc)
                if delay is None:
                    raise  # the caller can read exc.retry_after and decide
                logger.debug("taskreport: %s %s failed (%s); retrying in %.2fs", method, url, exc, delay)
                time.sleep(delay)
                attempt += 1

    # -- delivery ----------------------------------------------------------------------------------
    def send(self, ops: Sequence[Op]) -> list[Row | TaskReportError]:
        if self.refs is False:
            return self._send_each(ops)
        results: list[Row | TaskReportError] = []
        for chunk in self._chunks(ops):
            if results and isinstance(results[-1], TaskReportError) and is_service_down(results[-1]):
                results.extend([results[-1]] * len(chunk))  # don't spend a timeout on each chunk
                continue
            results.extend(self._send_batch(chunk))
        return results

    def _chunks(self, ops: Sequence[Op]) -> list[list[tuple[Op, bytes]]]:
        chunks: list[list[tuple[Op, bytes]]] = [[]]
        size = 0
        for op in ops:
            try:
                encoded = json.dumps(_batch_item(op), separators=(",", ":"), allow_nan=False).encode()
            except (TypeError, ValueError, OverflowError):
                chunks[-1].append((op, b""))  # refused below, without a request
                continue
            if chunks[-1] and (len(chunks[-1]) >= BATCH_OPS or size + len(encoded) > BATCH_BYTES):
                chunks.append([])
                size = 0
            chunks[-1].append((op, encoded))
            size += len(encoded) + 1
        return [c for c in chunks if c]

    def _send_batch(self, chunk: list[tuple[Op, bytes]]) -> list[Row | TaskReportError]:
        sendable = [encoded for _, encoded in chunk if encoded]
        answers: list[Row | TaskReportError] = []
        if sendable:
            body = b'{"operations":[' + b",".join(sendable) + b"]}"
            headers = {"Content-Type": "application/json"}
            try:
                response = self._raw("POST", self.batch_url, data=body, headers=headers)
            except TransportError as exc:
                answers = [exc] * len(sendable)
            else:
                answers = self._batch_answers(response, len(sendable))
        out: list[Row | TaskReportError] = []
        it = iter(answers)
        for _, encoded in chunk:
            out.append(next(it) if encoded else ValidationError("cannot be encoded as JSON"))
        return out

    def _batch_answers(self, response: Answer, count: int) -> list[Row | TaskReportError]:
        ours = FEATURES_HEADER in response.headers
        if response.status_code in (404, 405) and not ours:
            # a server without the batch operation (a stock server of the API): plan by id from now on
            self.refs = False
            raise BatchUnsupported("the service has no batch operation; sending one request per change")
        try:
            body = self._checked("POST", self.batch_url, response)
        except TaskReportError as exc:
            return [exc] * count
        self.refs = True
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list) or len(results) != count:
            return [ServerError("the batch answer does not match its request", status_code=502)] * count
        out: list[Row | TaskReportError] = []
        for item in results:
            status = item.get("status") if isinstance(item, dict) else None
            if not isinstance(status, int):
                out.append(ServerError(f"odd batch result {str(item)[:100]!r}", status_code=502))
            elif status >= 300:
                out.append(error_from_response(status, item, {}))
            elif not item.get("id"):
                out.append(ServerError(f"the service answered without a task: {str(item)[:100]!r}", status_code=502))
            else:
                out.append(item)
        return out

    def _send_each(self, ops: Sequence[Op]) -> list[Row | TaskReportError]:
        """One standard request per change, a few at a time: a stock server's way."""
        down: list[TaskReportError] = []

        def one(op: Op) -> Row | TaskReportError:
            if down:
                return down[0]  # don't spend a timeout on each remaining op
            try:
                body = encode_fields(op.fields)
                if op.kind == "create":
                    headers = {"Idempotency-Key": op.ref} if op.ref else None
                    row = self._request_once("POST", self.tasks_url, body, headers=headers)
                else:
                    assert op.task_id is not None
                    row = self._request_once("PATCH", self._task_url(op.task_id), body)
            except TaskReportError as exc:
                if is_service_down(exc):
                    down.append(exc)
                return exc
            except (TypeError, ValueError, OverflowError) as exc:
                return ValidationError(f"cannot be encoded: {exc}")
            if not isinstance(row, dict) or "id" not in row:
                return ServerError(f"the service answered without a task: {str(row)[:100]!r}", status_code=502)
            return row

        pool = self._executor() if len(ops) > 1 else None
        if pool is None:
            return [one(op) for op in ops]
        # creates go one after another, so the service numbers tasks in the order they were made; updates
        # share the other connections
        results: list[Row | TaskReportError] = [TransportError("not sent")] * len(ops)
        creates = [i for i, op in enumerate(ops) if op.kind == "create"]
        updates = [i for i, op in enumerate(ops) if op.kind != "create"]

        def run(indices: list[int]) -> None:
            for i in indices:
                results[i] = one(ops[i])

        lanes = max(1, PARALLEL - (1 if creates else 0))
        work = ([creates] if creates else []) + [updates[lane::lanes] for lane in range(lanes) if updates[lane::lanes]]
        for future in [pool.submit(run, indices) for indices in work]:
            future.result()
        return results

    def _executor(self) -> Any:
        """A few threads for concurrent requests, or None when none can be started (the interpreter is
        exiting: the last changes then go one by one from the exiting thread)."""
        pool = self._pool
        if pool is None:
            try:
                # imported on first use: most processes talk to a server with the batch operation
                from concurrent.futures import ThreadPoolExecutor

                pool = self._pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="taskreport-http")
            except RuntimeError:
                return None
        return pool

    # -- direct calls ------------------------------------------------------------------------------
    def _task_url(self, task_id: str) -> str:
        return f"{self.tasks_url}{urllib.parse.quote(str(task_id), safe='')}/"

    def create_task(self, fields: Mapping[str, Any], idempotency_key: str | None = None) -> Row:
        # a POST is retried like any call, so it always carries a key: a retry can't make a second task
        key = idempotency_key or uuid.uuid4().hex
        row: Row = self.request("POST", self.tasks_url, encode_fields(fields), headers={"Idempotency-Key": key})
        return row

    def get_task(self, task_id: str) -> Row:
        row: Row = self.request("GET", self._task_url(task_id))
        return row

    def update_task(self, task_id: str, fields: Mapping[str, Any]) -> Row:
        row: Row = self.request("PATCH", self._task_url(task_id), encode_fields(fields))
        return row

    def cancel_task(self, task_id: str) -> None:
        self.request("DELETE", self._task_url(task_id))

    def list_tasks(self, filters: Mapping[str, Any], cursor: str | None, page_size: int | None) -> PageResult:
        params: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
        if isinstance(params.get("status"), (list, tuple, set, frozenset)):
            params["status"] = ",".join(str(getattr(s, "value", s)) for s in params["status"])
        if isinstance(params.get("tag"), Mapping):
            params["tag"] = [f"{k}:{v}" for k, v in params["tag"].items()]
        if cursor:
            params["cursor"] = cursor
        if page_size:
            params["page_size"] = page_size
        body = self.request("GET", self.tasks_url, params=params)
        return PageResult(
            list(body.get("results") or []), _cursor_of(body.get("next")), _cursor_of(body.get("previous"))
        )

    def _actions_url(self, task_id: str) -> str:
        return f"{self._task_url(task_id)}actions/"

    def list_actions(self, task_id: str) -> list[Row]:
        body = self.request("GET", self._actions_url(task_id))
        return list(body or [])

    def create_action(self, task_id: str, fields: Mapping[str, Any], idempotency_key: str | None = None) -> Row:
        # retried like any call: the same key on every attempt, so a lost answer never adds it twice
        key = idempotency_key or uuid.uuid4().hex
        row: Row = self.request("POST", self._actions_url(task_id), dict(fields), headers={"Idempotency-Key": key})
        return row

    def update_action(self, task_id: str, action_id: int, fields: Mapping[str, Any]) -> Row:
        row: Row = self.request("PATCH", f"{self._actions_url(task_id)}{int(action_id)}/", dict(fields))
        return row

    def cancel_action(self, task_id: str, action_id: int) -> None:
        self.request("DELETE", f"{self._actions_url(task_id)}{int(action_id)}/")

