"""The HTTP transport: the task API over one keep-alive ``requests`` session."""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import requests
from requests.adapters import HTTPAdapter

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
from ._transport import Op, PageResult, Row
from ._version import __version__

logger = logging.getLogger("taskreport")

_TIME_FIELDS = ("start_time", "end_time")


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    # only the name itself: a resolver may send *.localhost to DNS, and so to another machine
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_secure(url: str, allow_insecure_http: bool) -> None:
    """Refuse to send a token in clear text anywhere but this machine, unless told to."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigurationError(f"unsupported URL scheme {parts.scheme!r}: use https:// (or http:// to localhost)")
    if parts.scheme == "http" and not is_loopback(parts.hostname or "") and not allow_insecure_http:
        raise ConfigurationError(
            f"refusing to send an API token over plain HTTP to {parts.hostname}: use https://, or pass "
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


class HttpTransport:
    """Talks to a task service (ours or any that speaks the API) over HTTPS.

    Direct calls (get, list, ...) retry connection errors, 408, 429, 502, 503 and 504 with exponential
    backoff and jitter, honouring ``Retry-After``; :meth:`send` never retries, because the flusher keeps the
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
    ) -> None:
        check_secure(url, allow_insecure_http)
        self.base = url.rstrip("/")
        self.organization = organization
        self.project = project
        self.timeout = self.default_timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._token = token
        self._local = threading.local()
        self.tasks_url = f"{self.base}/api/{urllib.parse.quote(organization)}/{urllib.parse.quote(project)}/tasks/"

    def __repr__(self) -> str:
        return f"<HttpTransport {self.base} {self.organization}/{self.project}>"

    # -- session -----------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        # one session per thread: requests.Session is not documented as thread-safe
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers.update(
                {
                    "User-Agent": f"taskreport/{__version__}",
                    "Accept": "application/json",
                }
            )
            if self._token:
                session.headers["Authorization"] = f"Token {self._token}"
            self._local.session = session
        return session

    def after_fork(self) -> None:
        # the parent's sockets must not be shared: drop (without closing) the inherited sessions
        self._local = threading.local()

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None

    def set_timeout(self, seconds: float | None) -> None:
        self.timeout = self.default_timeout if seconds is None else max(0.05, seconds)

    # -- requests ----------------------------------------------------------------------------------
    def _request_once(
        self, method: str, url: str, body: Any = None, params: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        try:
            response = self._session().request(
                method, url, json=body, params=params, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            raise TransportError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
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
        if status == 204:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ServerError(f"{method} {url}: the response is not JSON", status_code=status) from exc

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

    def send(self, ops: Sequence[Op]) -> list[Row | TaskReportError]:
        results: list[Row | TaskReportError] = []
        for i, op in enumerate(ops):
            try:
                body = encode_fields(op.fields)
            except (TypeError, ValueError, OverflowError) as exc:
                # this op can never be sent as it is; the others can
                results.append(ValidationError(f"cannot be encoded: {exc}"))
                continue
            try:
                if op.task_id is None:
                    key = {"Idempotency-Key": op.idempotency_key} if op.idempotency_key else None
                    row = self._request_once("POST", self.tasks_url, body, headers=key)
                else:
                    row = self._request_once("PATCH", self._task_url(op.task_id), body)
                if not isinstance(row, dict) or "id" not in row:
                    raise ServerError(f"the service answered without a task: {str(row)[:100]!r}", status_code=502)
                results.append(row)
            except TaskReportError as exc:
                results.append(exc)
                if is_service_down(exc):
                    # don't spend a timeout on each remaining op; a 500 is this request's, so the rest go on
                    results.extend([exc] * (len(ops) - i - 1))
                    break
        return results

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

    def create_action(self, task_id: str, fields: Mapping[str, Any]) -> Row:
        row: Row = self.request("POST", self._actions_url(task_id), dict(fields))
        return row

    def update_action(self, task_id: str, action_id: int, fields: Mapping[str, Any]) -> Row:
        row: Row = self.request("PATCH", f"{self._actions_url(task_id)}{int(action_id)}/", dict(fields))
        return row

    def cancel_action(self, task_id: str, action_id: int) -> None:
        self.request("DELETE", f"{self._actions_url(task_id)}{int(action_id)}/")
