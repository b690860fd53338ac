"""The HTTP transport's own rules for direct (synchronous) calls, against a real server through a proxy, on
both wires (the standard library's client, and requests: what a process with a proxy configured uses)."""

from __future__ import annotations

import email.utils
import time

import pytest
from faultproxy import FaultProxy, Seen
from server_fixtures import LiveServer

import taskreport
from taskreport import _http
from taskreport._errors import NotFound, RateLimited, ServerError, TransportError, Unauthorized, ValidationError
from taskreport._http import HttpTransport
from taskreport._wire import RequestsWire, StdlibWire


@pytest.fixture(autouse=True, params=[StdlibWire, RequestsWire], ids=["stdlib", "requests"])
def wire(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http, "default_wire", request.param)


def transport(live: LiveServer, proxy: FaultProxy, **options: object) -> HttpTransport:
    return HttpTransport(proxy.url, live.token, live.organization, live.project, backoff=0.05, **options)  # type: ignore[arg-type]


def mine(proxy: FaultProxy, live: LiveServer, path: str = "") -> list[Seen]:
    """The requests this test's client sent through the proxy (to ``path``). A client of an earlier test, still
    retrying at a port that was its proxy's and is now this one's, lands here too: a loaded suite once recorded
    another server's token (answered 401) between one test's own retries."""
    token = f"Token {live.token}"
    return [s for s in proxy.requests() if s.headers.get("Authorization") == token and path in s.path]


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
def test_transient_statuses_are_retried(sqlite_server: LiveServer, proxy: FaultProxy, status: int) -> None:
    t = transport(sqlite_server, proxy)
    created = t.create_task({"name": "retry me"})
    proxy.clear()
    proxy.fail(status, times=2)
    assert t.get_task(created["id"])["name"] == "retry me"
    assert [s.status for s in mine(proxy, sqlite_server, created["id"])] == [status, status, 200]


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 405, 409, 500])
def test_other_errors_are_not_retried(sqlite_server: LiveServer, proxy: FaultProxy, status: int) -> None:
    t = transport(sqlite_server, proxy)
    proxy.fail(status, times=3)
    with pytest.raises(taskreport.TaskReportError) as info:
        t.get_task("anything")
    assert info.value.status_code == status
    assert len(mine(proxy, sqlite_server, "/anything")) == 1


def test_errors_map_to_typed_exceptions(sqlite_server: LiveServer, proxy: FaultProxy) -> None:
    t = transport(sqlite_server, proxy, retries=0)
    with pytest.raises(NotFound):
        t.get_task("missing")
    with pytest.raises(ValidationError) as info:
        t.create_task({"name": "x", "value_max": -1})
    assert info.value.attr == "value_max"
    with pytest.raises(Unauthorized):
        HttpTransport(proxy.url, "trk_wrong", "acme", "web").get_task("x")
    proxy.fail(500)
    with pytest.raises(ServerError):
        t.get_task("x")
    proxy.fail(429, headers={"Retry-After": "7"})
    with pytest.raises(RateLimited) as limited:
        t.get_task("x")
    assert limited.value.retry_after == 7


def test_retry_after_as_an_http_date_is_honoured(sqlite_server: LiveServer, proxy: FaultProxy) -> None:
    t = transport(sqlite_server, proxy)
    created = t.create_task({"name": "later"})
    proxy.clear()
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    proxy.fail(503, headers={"Retry-After": when})
    start = time.monotonic()
    t.get_task(created["id"])
    # HTTP dates have one-second resolution: the wait is at least one second and bounded by two
    assert 0.9 <= time.monotonic() - start <= 3.0


def test_connection_errors_are_retried_then_raised(sqlite_server: LiveServer, proxy: FaultProxy) -> None:
    proxy.stop()
    t = transport(sqlite_server, proxy, retries=2)
    start = time.monotonic()
    with pytest.raises(TransportError):
        t.get_task("x")
    assert time.monotonic() - start < 2


def test_one_keep_alive_connection_and_a_user_agent(sqlite_server: LiveServer, proxy: FaultProxy) -> None:
    t = transport(sqlite_server, proxy)
    created = t.create_task({"name": "keep alive"})
    for i in range(20):
        t.update_task(created["id"], {"value": i})
    assert t.get_task(created["id"])["value"] == 19
    assert len(mine(proxy, sqlite_server)) == 22
    assert proxy.connections == 1  # every request went over one TCP connection
    assert {s.headers.get("User-Agent") for s in mine(proxy, sqlite_server)} == {f"taskreport/{taskreport.__version__}"}
