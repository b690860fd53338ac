"""A task's links and times, as rendered into every response: remembered parts must never change the text."""

from __future__ import annotations

import json
import urllib.parse

from taskreport._timeutil import to_iso
from taskreport.server._responses import dumps, render_task, task_url


def _expected(base: str, organization: str, project: str, task_id: str) -> str:
    q = urllib.parse.quote
    return f"{base}/api/{q(organization, safe='')}/{q(project, safe='')}/tasks/{q(task_id, safe='')}/"


def test_task_urls_quote_every_part_whatever_was_rendered_before() -> None:
    ids = ["AbC123", "x~y.z-_", "a b", "a/b", "100%", "ü", "?#&", "..", ""]
    scopes = [("http://h", "acme", "web"), ("https://h:8443/root", "my org", "a/b"), ("http://h", "acme", "web2")]
    # more bases than are remembered (a Host header is the client's to choose): still right after the clear
    scopes += [(f"http://host{n}", "acme", "web") for n in range(5000)]
    for base, organization, project in scopes * 2:
        for task_id in ids if base in ("http://h", "https://h:8443/root") else ids[:3]:
            assert task_url(base, organization, project, task_id) == _expected(base, organization, project, task_id)


def test_task_times_render_as_before_on_every_update() -> None:
    row = {"id": "t1", "organization": "acme", "project": "web", "time_to_start": 0.25, "start_time": None,
           "end_time": None, "created": 1764580000.123456}  # fmt: skip
    for n in range(5000):
        row = {**row, "updated": 1764580000.5 + n / 7, "start_time": 1764580001.0 + n % 3,
               "end_time": None if n % 2 else 1764590000.0 + n}  # fmt: skip
        out = render_task(row, "http://h")
        assert [out[k] for k in ("created", "updated", "start_time", "end_time")] == [
            to_iso(row[k]) for k in ("created", "updated", "start_time", "end_time")]  # fmt: skip
        assert out["url"] == out["public_url"] == "http://h/api/acme/web/tasks/t1/"
        assert out["time_to_start"] == "0.250000"


def test_response_json_is_compact_utf8_and_takes_what_orjson_refuses() -> None:
    body = {"id": "AbC", "name": "näme ✓", "value": 42, "data": {"nested": [1, None, True, "x"], "f": 0.5},
            "tags": {}, "parent": None, "value_max": 9223372036854775807}  # fmt: skip
    stdlib = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    assert dumps(body) == stdlib
    # beyond 64 bits, and a lone surrogate (a row stored before text was checked): never a 500
    assert dumps({"n": 2**70}) == b'{"n":1180591620717411303424}'
    assert json.loads(dumps({"name": "bad \udfff"})) == {"name": "bad \ufffd"}
