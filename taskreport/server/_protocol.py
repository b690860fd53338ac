"""uvicorn's HTTP protocol, answering requests it can not parse with the API's error body.

A request uvicorn can not parse (a negative Content-Length, a byte that is not ASCII in the path, a request
line longer than its buffer) never reaches the application: uvicorn answers it with a plain-text 400. The
classes here answer it as the rest of the API answers a bad request, with the seed's JSON body (and the
features header), and close the connection as uvicorn does::

    uvicorn.Config(app, http=protocol_class())
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

from .._errors import ValidationError
from ._responses import dumps

_BODY = dumps(ValidationError("Invalid HTTP request received.", code="parse_error").to_body())
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"connection", b"close"),
    (b"x-taskreport-features", b"batch, refs"),
]


def _h11_class() -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class SeedH11Protocol(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            conn: Any = self.conn
            transport: Any = self.transport
            headers = [*_HEADERS, (b"content-length", str(len(_BODY)).encode())]
            response = h11.Response(status_code=400, headers=headers, reason=b"Bad Request")
            for event in (response, h11.Data(data=_BODY), h11.EndOfMessage()):
                transport.write(conn.send(event))
            transport.close()

    return SeedH11Protocol


def _httptools_class() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class SeedHttpToolsProtocol(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            transport: Any = self.transport
            lines = [b"HTTP/1.1 400 Bad Request"]
            lines += [name + b": " + value for name, value in _HEADERS]
            lines.append(b"content-length: " + str(len(_BODY)).encode())
            transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + _BODY)
            transport.close()

    return SeedHttpToolsProtocol


def protocol_class(parser: str = "auto") -> type[asyncio.Protocol]:
    """The HTTP protocol uvicorn's ``auto`` would pick (httptools if installed, else h11), or the one
    ``parser`` names (``"httptools"``, ``"h11"``), answering unparsable requests with the API's 400 body."""
    if parser == "httptools" or (parser == "auto" and importlib.util.find_spec("httptools") is not None):
        return _httptools_class()
    return _h11_class()


def uvicorn_config(app: Any, parser: str = "auto", **options: Any) -> Any:
    """A ``uvicorn.Config`` for this server: its lifespan on, and unparsable requests answered in the API's
    error format. ``parser``: see :func:`protocol_class`. ``options`` are uvicorn's (``log_level``,
    ``ssl_certfile``...)."""
    import uvicorn

    return uvicorn.Config(app, lifespan="on", http=protocol_class(parser), **options)
