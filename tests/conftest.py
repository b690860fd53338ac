"""Shared fixtures: every test gets its own TASKREPORT_HOME and config file, and no client left behind."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pgschema import postgres_schema

# scrypt at its real cost (128 MiB, a quarter second a hash) buys a test suite nothing: servers and users are
# made by the hundred here. The tests of the cost itself remove this.
os.environ.setdefault("TASKREPORT_SCRYPT_N", "1024")

# a suite started in the background by a shell without job control inherits SIGINT and SIGQUIT ignored, and so
# would every process it starts (an ignored signal survives exec): the tests of signal forwarding and of Ctrl-C
# need them as a terminal gives them
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)

if TYPE_CHECKING:
    import taskreport

pytest_plugins = ["server_fixtures", "scrypt_calls"]

@pytest.fixture(autouse=True)
def internal_errors(request: pytest.FixtureRequest) -> Iterator[list[BaseException]]:
    """Fail a test during which the library swallowed an internal error (a bug it logged and went on
    from), unless the test says it expects one with ``@pytest.mark.internal_errors``."""
    from taskreport import _internal

    seen: list[BaseException] = []
    _internal.hooks.append(seen.append)
    yield seen
    _internal.hooks.remove(seen.append)
    if seen and request.node.get_closest_marker("internal_errors") is None:
        pytest.fail(f"taskreport swallowed {len(seen)} internal error(s): {seen!r}", pytrace=False)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Keep tests off the developer's real config, data directory and environment."""
    home = tmp_path / "home"
    monkeypatch.setenv("TASKREPORT_HOME", str(home))
    monkeypatch.setenv("TASKREPORT_CONFIG", str(tmp_path / "config.toml"))
    for var in (
        "TASKREPORT_URL",
        "TASKREPORT_TOKEN",
        "TASKREPORT_ORG",
        "TASKREPORT_PROJECT",
        "TASKREPORT_DISABLED",
        "TASKREPORT_ALLOW_INSECURE_HTTP",
    ):
        monkeypatch.delenv(var, raising=False)
    yield home
    import taskreport

    taskreport.shutdown(timeout=2)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return str(tmp_path / "store.db")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    with postgres_schema("tr_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Runs a test once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(params=["embedded", "http-sqlite", pytest.param("http-postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> Callable[..., taskreport.Client]:
    """``configure(**options)`` points the library at one backend (the embedded store, or a real server on
    SQLite or PostgreSQL over HTTP), so the same client tests run against each."""
    import taskreport

    settings: dict[str, Any] = {}
    if request.param != "embedded":
        server_factory = request.getfixturevalue("server_factory")
        live = server_factory("sqlite" if request.param == "http-sqlite" else "postgresql")
        settings = {"url": live.url, "token": live.token, "organization": live.organization,
                    "project": live.project}

    def configure(**options: Any) -> taskreport.Client:
        return taskreport.init(**{**settings, **options})

    configure()
    return configure


@pytest.fixture
def proxy(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fault-injecting proxy in front of a real server on SQLite (the ``sqlite_server`` fixture)."""
    from faultproxy import FaultProxy

    p = FaultProxy(request.getfixturevalue("sqlite_server").url)
    yield p
    p.close()
