"""How a request reaches the service: the standard library's ``http.client``, or ``requests`` where the
environment asks for what only requests does.

Why two: every process that reports over HTTP pays its HTTP client's import once, at start. For requests
(with urllib3 and charset_normalizer) that is about 60 ms of CPU, half of what ``taskreport run x -- true``
may add to ``true``, and paid again by every ``taskreport update`` in a shell loop. ``http.client`` is
imported by requests anyway, and is all one keep-alive connection to one service needs.

requests is chosen when the environment names a proxy, and on macOS and Windows, where a proxy can come
from the system's settings. Otherwise the two behave alike: no proxy, and the same certificate authorities
(the bundle named by ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``, else certifi's, as requests does).
"""

from __future__ import annotations

import os
import sys
import threading
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import http.client
    import ssl

#: a proxy named in the environment: requests carries the requests then (it knows proxies; we don't)
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")
#: where requests looks for certificate authorities other than certifi's, in this order
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class WireError(Exception):
    """The request could not be sent or its answer read (refused, timed out, reset); the text says why."""


class Headers(dict[str, str]):
    """An answer's headers, looked up without regard to case as HTTP wants."""

    def __init__(self, items: Any = ()) -> None:
        super().__init__((str(k).lower(), str(v)) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class Answer:
    """A whole answer, read: status, headers and body."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Headers, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        import json

        return json.loads(self.content)


class Wire(Protocol):
    def request(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str],
                timeout: float) -> Answer: ...

    def host_of(self, url: str) -> str:
        """The host this wire would connect to for ``url`` (what the plain-HTTP check must judge)."""
        ...

    def after_fork(self) -> None: ...

    def close(self) -> None: ...


def client_headers(token: str | None = None) -> dict[str, str]:
    """What every request of this library says about itself, and its token when it has one."""
    from ._version import __version__

    headers = {"User-Agent": f"taskreport/{__version__}", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    return headers


def wants_requests(environ: Mapping[str, str] | None = None, platform: str | None = None) -> bool:
    environ = os.environ if environ is None else environ
    if (platform or sys.platform) in ("darwin", "win32"):
        return True
    return any(environ.get(name) or environ.get(name.upper()) for name in PROXY_VARIABLES)


def default_wire() -> Wire:
    return RequestsWire() if wants_requests() else StdlibWire()


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle keep-alive connection was closed by the other end (it reads as ready: the end of
    the stream), so that a request is never written into a connection that is gone."""
    sock = conn.sock
    if sock is None:
        return False  # closed on our side: http.client opens a new one
    import select

    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class StdlibWire:
    """One keep-alive ``http.client`` connection per thread."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._tls: ssl.SSLContext | None = None

    def host_of(self, url: str) -> str:
        return urllib.parse.urlsplit(url).hostname or ""

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            import ssl

            # the certificate authorities requests would trust, so that a change of wire trusts the same
            bundle = next((os.environ[name] for name in CA_VARIABLES if os.environ.get(name)), None)
            if bundle is None:
                try:
                    import certifi

                    bundle = certifi.where()
                except ImportError:
                    pass
            if bundle is not None and os.path.isdir(bundle):
                self._tls = ssl.create_default_context(capath=bundle)
            else:
                self._tls = ssl.create_default_context(cafile=bundle)
        return self._tls

    def _connection(self, scheme: str, host: str, port: int | None, timeout: float) -> http.client.HTTPConnection:
        import http.client

        key = (scheme, host, port)
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and (self._local.key != key or _dropped(conn)):
            conn.close()
            conn = None
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._context())
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            self._local.conn, self._local.key = conn, key
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def request(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str],
                timeout: float) -> Answer:
        import http.client

        split = urllib.parse.urlsplit(url)
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        try:
            conn = self._connection(split.scheme.lower(), split.hostname or "", split.port, timeout)
            conn.request(method, target, body=body, headers=dict(headers))
            response = conn.getresponse()
            content = response.read()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self.close()
            raise WireError(f"{type(exc).__name__}: {exc}") from exc
        if response.will_close:
            self.close()
        return Answer(response.status, Headers(response.getheaders()), content)

    def after_fork(self) -> None:
        # the parent's socket is not ours: drop it without closing
        self._local = threading.local()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()


class RequestsWire:
    """A keep-alive ``requests`` session per thread (requests.Session is not documented as thread-safe)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def host_of(self, url: str) -> str:
        from urllib3.util import parse_url

        try:
            return (parse_url(url).host or "").strip("[]")  # what urllib3, and so requests, connects to
        except ValueError:
            return ""

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests
            from requests.adapters import HTTPAdapter

            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def request(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str],
                timeout: float) -> Answer:
        import requests

        try:
            response = self._session().request(method, url, data=body, headers=dict(headers), timeout=timeout,
                                               allow_redirects=False)
        except requests.RequestException as exc:
            raise WireError(f"{type(exc).__name__}: {exc}") from exc
        return Answer(response.status_code, Headers(response.headers.items()), response.content)

    def after_fork(self) -> None:
        self._local = threading.local()

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        self._local.session = None
        if session is not None:
            session.close()
