"""A real HTTP proxy for tests: sits between the client and a real server, counts what passes, and can
answer with errors, slow down, or drop off the network, so that retry, backoff and spool paths are tested
against real sockets rather than mocks."""

from __future__ import annotations

import dataclasses
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass
class Seen:
    method: str
    path: str
    body: Any
    at: float
    status: int
    injected: bool = False
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Fault:
    status: int
    body: Any
    headers: dict[str, str]


class FaultProxy:
    def __init__(self, upstream: str, port: int = 0) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.seen: list[Seen] = []
        self.faults: list[Fault] = []
        #: (predicate on method, path, JSON body; fault) answered every time the predicate holds
        self.rules: list[tuple[Callable[[str, str, Any], bool], Fault]] = []
        self.delay = 0.0
        self.refusing = False
        #: behave as a stock server of the API: no batch operation, no task references
        self.stock = False
        #: TCP connections accepted, to check keep-alive
        self.connections = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._reserved: socket.socket | None = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- controls ---------------------------------------------------------------------------------
    def fail(self, status: int, times: int = 1, body: Any = None, headers: dict[str, str] | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` instead of forwarding them."""
        if body is None:
            body = {"type": "server_error" if status >= 500 else "client_error",
                    "errors": [{"code": "error", "detail": f"injected {status}", "attr": None}]}
        with self._lock:
            self.faults.extend(Fault(status, body, dict(headers or {})) for _ in range(times))

    def fail_when(self, predicate: Callable[[str, str, Any], bool], status: int) -> None:
        """Answer ``status`` to every request for which ``predicate(method, path, body)`` holds."""
        body = {"type": "server_error" if status >= 500 else "client_error",
                "errors": [{"code": "error", "detail": f"injected {status}", "attr": None}]}
        with self._lock:
            self.rules.append((predicate, Fault(status, body, {})))

    def requests(self, method: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if method is None or s.method == method]

    def forwarded(self, method: str | None = None) -> list[Seen]:
        """Requests that reached the real server (not answered by an injected fault)."""
        return [s for s in self.requests(method) if not s.injected]

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()

    def stop(self) -> None:
        """Drop off the network: the port refuses connections and open ones are cut. The port stays reserved (a
        socket bound to it, not listening, so a connection is refused): freed, it could go to another test's
        server meanwhile, and the client under test would be talking to that one."""
        self.refusing = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self._reserved = socket.socket()
            # past the connections the server just closed (TIME_WAIT); a port bound this way is still one that
            # the system hands no one asking for a free port
            self._reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._reserved.bind(("127.0.0.1", self.port))

    def start(self) -> None:
        self.refusing = False
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                if proxy.refusing:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                with proxy._lock:
                    fault = proxy.faults.pop(0) if proxy.faults else None
                    if fault is None:
                        fault = next((f for rule, f in proxy.rules if rule(self.command, self.path, body)), None)
                    if fault is None and proxy.stock and "/batch" in self.path:
                        fault = Fault(405, {"type": "client_error", "errors": [{
                            "code": "method_not_allowed", "detail": "Method \u201cpost\u201d not allowed.",
                            "attr": None}]}, {})
                    # recorded when it arrives (status 0 until answered): a request still held by a delay, or
                    # whose client gave up on it, has been seen all the same
                    seen = Seen(self.command, self.path, body, time.monotonic(), fault.status if fault else 0,
                                fault is not None, dict(self.headers.items()))
                    proxy.seen.append(seen)
                if proxy.delay:
                    time.sleep(proxy.delay)
                if fault is not None:
                    payload = json.dumps(fault.body).encode()
                    self.send_response(fault.status)
                    for k, v in fault.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=30)
                skip = ("host", "connection", "idempotency-key") if proxy.stock else ("host", "connection")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                conn.request(self.command, self.path, body=raw or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if proxy.stock:
                    data = _strip_refs(data)
                seen.status = resp.status
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    dropped = ("transfer-encoding", "connection", "content-length", "date", "server")
                    if k.lower() in dropped or (proxy.stock and k.lower() == "x-taskreport-features"):
                        continue
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up, or an upstream stopped at teardown: part of the tests' weather

            def verify_request(self, request: Any, client_address: Any) -> bool:
                with proxy._lock:
                    proxy.connections += 1
                return True

        server = Server(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.stop()
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None


def _strip_refs(data: bytes) -> bytes:
    """A stock server's answer: the task JSON without the ``ref`` our server adds."""
    try:
        body = json.loads(data)
    except ValueError:
        return data
    for task in body.get("results", [body]) if isinstance(body, dict) else []:
        if isinstance(task, dict):
            task.pop("ref", None)
    return json.dumps(body).encode()


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream)
    try:
        yield proxy
    finally:
        proxy.close()


def init_through(proxy: FaultProxy, live: Any, **options: Any) -> Any:
    """Point the library at ``live`` (a LiveServer) through ``proxy``."""
    import taskreport

    return taskreport.init(url=proxy.url, token=live.token, organization=live.organization,
                           project=live.project, **options)
