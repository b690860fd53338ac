"""``httpx.get``, ``post``... for tests: one client per call, as httpx's own functions make, but built on one TLS
context for the whole process.

httpx loads certifi's bundle into a new TLS context for every client, about 20 ms of CPU, even for plain
HTTP; the suite makes about a thousand such calls to its loopback servers, on two cores.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

__all__ = ["client", "delete", "get", "patch", "post", "put", "request"]

_TLS = ssl.create_default_context()


def request(method: str, url: str, *, timeout: float = 5.0, **kwargs: Any) -> httpx.Response:
    with httpx.Client(verify=_TLS, timeout=timeout) as client:
        return client.request(method, url, **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return request("POST", url, **kwargs)


def patch(url: str, **kwargs: Any) -> httpx.Response:
    return request("PATCH", url, **kwargs)


def put(url: str, **kwargs: Any) -> httpx.Response:
    return request("PUT", url, **kwargs)


def delete(url: str, **kwargs: Any) -> httpx.Response:
    return request("DELETE", url, **kwargs)


def client(**kwargs: Any) -> httpx.Client:
    """``httpx.Client(...)`` on the shared TLS context."""
    return httpx.Client(verify=_TLS, **kwargs)
