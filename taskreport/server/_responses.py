"""Rendering: store rows to the API's JSON, errors to the seed's bodies, and content negotiation."""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from starlette.responses import Response

from .._errors import TaskReportError
from .._store import Row, scrub
from .._timeutil import to_iso

JSON_TYPE = "application/json"


#: made once: json.dumps with options makes an encoder for every call
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

_orjson: Any
try:  # the server extra's: encodes a task's response in a tenth of the time
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None


def dumps(body: Any) -> bytes:
    """Compact UTF-8 JSON. What orjson refuses (an integer beyond 64 bits, a lone surrogate) the standard
    library encodes, as it did every body before."""
    if _orjson is not None:
        try:
            return bytes(_orjson.dumps(body))
        except TypeError:  # orjson.JSONEncodeError
            pass
    text = _ENCODER.encode(body)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # a lone surrogate, from a row stored before text was checked or echoed in an error: never a 500
        return _ENCODER.encode(scrub(body)).encode()


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type=JSON_TYPE, headers=headers)


def error_response(exc: TaskReportError, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(exc.to_body(), exc.status_code or 500, headers)


def server_error_body() -> dict[str, Any]:
    # never the exception's text: it may hold SQL, paths or secrets
    return {"type": "server_error", "errors": [{"code": "error", "detail": "A server error occurred.", "attr": None}]}


def server_error_response() -> Response:
    return json_response(server_error_body(), 500)


#: characters quote() never changes: an id made of them is its own path segment
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]+")
#: the start of a task's URL, per (base, organization, project): the same few for nearly every response
_TASK_URL_PREFIXES: dict[tuple[str, str, str], str] = {}
#: a task's created, start_time and end_time, rendered: the same on every update of that task
_TIMES: dict[float, str | None] = {}
#: entries each of the two caches above keeps at most (cleared when full: the base comes from a Host header)
_CACHED = 4096


def task_url(base: str, organization: str, project: str, task_id: str) -> str:
    key = (base, organization, project)
    prefix = _TASK_URL_PREFIXES.get(key)
    if prefix is None:
        q = urllib.parse.quote
        prefix = f"{base}/api/{q(organization, safe='')}/{q(project, safe='')}/tasks/"
        if len(_TASK_URL_PREFIXES) >= _CACHED:
            _TASK_URL_PREFIXES.clear()
        _TASK_URL_PREFIXES[key] = prefix
    if not _UNRESERVED.fullmatch(task_id):
        task_id = urllib.parse.quote(task_id, safe="")
    return f"{prefix}{task_id}/"


def _fixed_time(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    text = _TIMES.get(epoch)
    if text is None:
        text = to_iso(epoch)
        if len(_TIMES) >= _CACHED:
            _TIMES.clear()
        _TIMES[epoch] = text
    return text


def render_task(row: Row, base: str, public_link: Callable[[str, Row], str] | None = None) -> dict[str, Any]:
    out = dict(row)
    out["created"] = _fixed_time(row["created"])
    out["updated"] = to_iso(row["updated"])  # new on every write: remembering it would only push others out
    out["start_time"] = _fixed_time(row["start_time"])
    out["end_time"] = _fixed_time(row["end_time"])
    tts = row["time_to_start"]
    out["time_to_start"] = None if tts is None else f"{tts:.6f}"
    out["url"] = out["public_url"] = task_url(base, row["organization"], row["project"], row["id"])
    if public_link is not None:
        out["public_url"] = public_link(base, row)
    return out


def render_action(row: Row) -> dict[str, Any]:
    out = dict(row)
    out["created"] = to_iso(row["created"])
    out["updated"] = to_iso(row["updated"])
    return out


def _media_ranges(header: str) -> Iterable[tuple[str, float]]:
    for part in header.split(","):
        pieces = part.strip().split(";")
        media = pieces[0].strip().lower()
        if not media:
            continue
        q = 1.0
        for param in pieces[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                if not math.isfinite(q):
                    q = 0.0
        yield media, q


def accepts(header: str | None, offered: Iterable[str] = (JSON_TYPE,)) -> str | None:
    """The first of ``offered`` the Accept header allows (any of them when it is absent), else None."""
    choices = list(offered)
    if not header or not header.strip():
        return choices[0]
    ranges = [(media, q) for media, q in _media_ranges(header) if q > 0]
    for choice in choices:
        major = choice.split("/", 1)[0]
        for media, _q in ranges:
            if media in ("*/*", f"{major}/*", choice):
                return choice
    return None


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json_type(content_type: str | None) -> bool:
    media = media_type(content_type)
    return media == JSON_TYPE or (media.startswith("application/") and media.endswith("+json"))
