"""Webhook deliveries: the address checks (only public addresses unless allowed, every address of a name,
pinned against DNS rebinding), the POST, and its signature.

Deliveries are signed as Standard Webhooks (https://www.standardwebhooks.com) sign them: ``webhook-id`` (the
firing, the same on every retry), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
(``v1,`` + base64 of HMAC-SHA256 over ``"{id}.{timestamp}.{body}"``, keyed with the project's secret without
its ``whsec_`` prefix, base64-decoded).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from typing import Any


class DeliveryError(Exception):
    """A delivery that failed; ``retry`` False when trying again can not help."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


# NAT64 (RFC 6052) embeds an IPv4 address that a NAT64 gateway connects to
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a webhook may not go to ``ip`` (e.g. ``"loopback"``), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        # an IPv4 address wrapped in IPv6 reaches that IPv4 address: judge it as one
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    # the specific kinds first: Python counts loopback, link-local and reserved ranges as private too
    for kind in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    # what is left and still not global: shared (carrier-grade NAT), documentation, benchmarking ranges
    return None if ip.is_global else "non-public"


def resolve_webhook(host: str, port: int, *, allow_private: bool) -> list[tuple[int, Any]]:
    """The (family, sockaddr) pairs of ``host``; DeliveryError if any of them is not a public address.

    Every address is checked, not only the first: a name with one public and one internal address would
    otherwise reach the internal one whenever the public one fails."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise DeliveryError(f"webhook unreachable: {type(exc).__name__}: {exc}") from None
    if not allow_private:
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            kind = refused_address(ip)
            if kind is not None:
                named = str(ip) if host.strip("[]") == str(ip) else f"{host} ({ip})"
                raise DeliveryError(
                    f"webhook refused: {named} is a {kind} address "
                    "(taskreport serve --allow-private-webhooks allows it)",
                    retry=False,
                )
    return [(info[0], info[4]) for info in infos]


def _connector(addresses: list[tuple[int, Any]]) -> Callable[..., socket.socket]:
    """A ``socket.create_connection`` that connects only to the addresses that were checked, so that a
    name resolving differently a moment later (DNS rebinding) can not lead elsewhere."""

    def connect(_address: Any, timeout: Any = None, source_address: Any = None) -> socket.socket:
        error: OSError | None = None
        for family, sockaddr in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError("no address to connect to")

    return connect


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None, timeout: float, addresses: list[tuple[int, Any]]) -> None:
        super().__init__(host, port, timeout=timeout)
        self._create_connection = _connector(addresses)


class _PinnedHTTPS(http.client.HTTPSConnection):
    # the Host header and TLS (SNI, certificate check) still use the name: only the socket is pinned
    def __init__(self, host: str, port: int | None, timeout: float, addresses: list[tuple[int, Any]]) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._create_connection = _connector(addresses)


def post_webhook(
    url: str, body: bytes, headers: dict[str, str], timeout: float, *, allow_private: bool = False
) -> None:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise DeliveryError(f"invalid webhook URL {url!r}", retry=False)
    # checked at each delivery, not when the action was written: a name can be pointed elsewhere later
    addresses = resolve_webhook(
        parts.hostname, port or (443 if parts.scheme == "https" else 80), allow_private=allow_private
    )
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = _PinnedHTTPS(parts.hostname, port, timeout, addresses)
    else:
        conn = _PinnedHTTP(parts.hostname, port, timeout, addresses)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        response.read(64 * 1024)
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"webhook unreachable: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    # redirects are not followed: a webhook that moved should be reconfigured, not chased (and a redirect
    # could point anywhere, past the address check)
    if not 200 <= response.status < 300:
        raise DeliveryError(f"webhook answered HTTP {response.status}")


def signature_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers that let a receiver check a delivery came from this server unchanged."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{digest}"}
