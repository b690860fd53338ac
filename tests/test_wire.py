"""The two wires under the HTTP transport: which one a process gets, TLS with the certificate authorities
requests would trust, a keep-alive connection the server closed while idle, and a process reporting over
HTTP that never imports requests."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_fixtures import LiveServer

from taskreport._errors import TransportError
from taskreport._http import HttpTransport
from taskreport._wire import RequestsWire, StdlibWire, Wire, wants_requests
from taskreport.cli._group import transport_reason

WIRES = [pytest.param(StdlibWire, id="stdlib"), pytest.param(RequestsWire, id="requests")]


@pytest.mark.parametrize(
    ("environ", "platform", "expected"),
    [
        ({}, "linux", False),
        ({"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}, "linux", False),
        ({"NO_PROXY": "localhost"}, "linux", False),
        ({"HTTPS_PROXY": "http://proxy.example:3128"}, "linux", True),
        ({"http_proxy": "http://proxy.example:3128"}, "linux", True),
        ({"ALL_PROXY": "socks5://proxy.example:1080"}, "linux", True),
        ({"HTTPS_PROXY": ""}, "linux", False),
        ({}, "darwin", True),
        ({}, "win32", True),
    ],
)
def test_requests_carries_what_needs_a_proxy(environ: dict[str, str], platform: str, expected: bool) -> None:
    assert wants_requests(environ, platform) is expected


class _Answering(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a task; closes the connection after each answer without saying so when the
    server's ``close_after`` is set (what a server's idle keep-alive timeout looks like to a client)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        task = {"id": "t1", "name": "over the wire", "path": self.path, "host": self.headers["Host"]}
        body = json.dumps(task).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.connections.add(self.client_address)  # type: ignore[attr-defined]
        self.close_connection = bool(self.server.close_after)  # type: ignore[attr-defined]


class _ServerV6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _serving(close_after: bool, tls: ssl.SSLContext | None = None, ipv6: bool = False) -> Iterator[Any]:
    if ipv6:
        try:
            server: http.server.ThreadingHTTPServer = _ServerV6(("::1", 0), _Answering)
        except OSError as exc:
            pytest.skip(f"no IPv6 loopback here: {exc}")
    else:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.connections = set()  # type: ignore[attr-defined]
    server.close_after = close_after  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def plain_server() -> Iterator[Any]:
    yield from _serving(close_after=True)


@pytest.mark.parametrize("wire", WIRES)
def test_a_connection_closed_while_idle_is_replaced_not_failed(plain_server: Any, wire: type[Wire]) -> None:
    t = HttpTransport(f"http://127.0.0.1:{plain_server.server_address[1]}", "trk_x", "o", "p", retries=0,
                      wire=wire())
    for _ in range(3):
        assert t.get_task("t1")["name"] == "over the wire"
        time.sleep(0.2)  # the server has closed its end by now
    assert len(plain_server.connections) == 3
    t.close()


@pytest.fixture
def ipv6_server() -> Iterator[Any]:
    yield from _serving(close_after=False, ipv6=True)


@pytest.mark.parametrize("wire", WIRES)
def test_an_ipv6_loopback_url_reaches_its_server(ipv6_server: Any, wire: type[Wire]) -> None:
    port = ipv6_server.server_address[1]
    answer = HttpTransport(f"http://[::1]:{port}", "trk_x", "o", "p", retries=0, wire=wire()).get_task("t1")
    assert answer["host"] == f"[::1]:{port}"  # the Host header an HTTP/1.1 server expects


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: no certificate to serve TLS with")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[Any]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    yield from _serving(close_after=False, tls=context)


@pytest.mark.parametrize("wire", WIRES)
def test_tls_trusts_the_bundle_requests_would(tls_server: Any, certificate: tuple[Path, Path], wire: type[Wire],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"https://127.0.0.1:{tls_server.server_address[1]}"
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    # certifi's authorities (the default) never signed a self-made certificate
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    with pytest.raises(TransportError) as refused:
        HttpTransport(url, "trk_x", "o", "p", retries=0, wire=wire()).get_task("t1")
    assert transport_reason(refused.value) == "TLS certificate verify failed"
    # named by requests' variable: trusted, over one connection
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))
    t = HttpTransport(url, "trk_x", "o", "p", retries=0, wire=wire())
    assert t.get_task("t1")["path"] == "/api/o/p/tasks/t1/"
    assert t.get_task("t1")["name"] == "over the wire"
    assert len(tls_server.connections) == 1
    t.close()


def test_reporting_over_http_never_imports_requests(sqlite_server: LiveServer, tmp_path: Path) -> None:
    """What keeps ``taskreport run`` and every CLI call over HTTP quick to start (see bench/run_overhead.py)."""
    script = f"""
import sys, taskreport
taskreport.init(url={sqlite_server.url!r}, token={sqlite_server.token!r}, organization="acme", project="web",
                home={str(tmp_path)!r})
task = taskreport.Task.create("no requests")
task.update(value=5)
task.success()
assert taskreport.flush(10), "not delivered"
print(sorted(m for m in sys.modules if m.split(".")[0] in ("requests", "urllib3", "charset_normalizer")))
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    page = HttpTransport(sqlite_server.url, sqlite_server.token, "acme", "web").list_tasks(
        {"name": "no requests"}, None, None)
    [row] = page.results
    assert (row["status"], row["value"]) == ("success", 5)
