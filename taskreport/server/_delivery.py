"""Delivers action firings from the outbox: webhooks by HTTP POST, email by SMTP, retried with backoff."""

from __future__ import annotations

import email.message
import http.client
import ipaddress
import logging
import smtplib
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._store import Row, Store
from .._store._outbox import claim_firings, has_due_firings, record_attempt
from .._version import __version__
from ._responses import dumps, render_task
from ._settings import ServerSettings

logger = logging.getLogger("taskreport.server")


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


class Deliverer:
    """A thread that claims due firings and hands them to a small pool of senders."""

    def __init__(self, store: Store, settings: ServerSettings, base_url: Callable[[], str]) -> None:
        self.store = store
        self.settings = settings
        self.base_url = base_url
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="taskreport-delivery")
        # a claim outlives the slowest attempt, so that another server never delivers the same firing twice
        smtp_timeout = settings.smtp.timeout if settings.smtp else 0.0
        self.lease = 2 * max(settings.webhook_timeout, smtp_timeout) + 30.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="taskreport-deliverer", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                claimed = self.run_once()
            except Exception:
                logger.exception("taskreport server: claiming action firings failed")
                claimed = 0
            if claimed == 0:
                self._wake.wait(self.settings.delivery_interval)
                self._wake.clear()

    def run_once(self) -> int:
        """Claim the firings due now and deliver them; returns how many were claimed."""
        with self.store.transaction(write=False) as tx:
            if not has_due_firings(tx.cur, time.time()):
                return 0
        with self.store.transaction(write=True) as tx:
            firings = claim_firings(tx.cur, time.time(), lease=self.lease)
        for _ in self._pool.map(self._deliver, firings):
            pass
        return len(firings)

    def _deliver(self, firing: Row) -> None:
        error: str | None = None
        retry = False
        try:
            self.send(firing)
        except DeliveryError as exc:
            error, retry = str(exc), exc.retry
        except Exception as exc:
            logger.exception("taskreport server: delivering firing %s failed", firing["id"])
            error, retry = f"{type(exc).__name__}: {exc}", True
        now = time.time()
        retry_at: float | None = None
        if error is not None and retry and firing["attempts"] + 1 < self.settings.delivery_attempts:
            retry_at = now + self.settings.delivery_backoff * 2 ** firing["attempts"]
        if error is not None and retry_at is None and retry:
            error = f"{error} (after {firing['attempts'] + 1} attempts)"
        with self.store.transaction(write=True) as tx:
            record_attempt(tx.cur, firing, now, error=error, retry_at=retry_at)

    def send(self, firing: Row) -> None:
        integration: str = firing["integration"]
        config: Any = firing["config"] if isinstance(firing["config"], dict) else {}
        task = render_task(firing["payload"], self.base_url())
        if integration.startswith("webhook:"):
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"taskreport-server/{__version__}",
                "X-Taskreport-Trigger": firing["point"],
            }
            post_webhook(
                str(config.get("url", "")),
                dumps(task),
                headers,
                self.settings.webhook_timeout,
                allow_private=self.settings.allow_private_webhooks,
            )
        elif integration == "email":
            self._send_email(config, task, firing["point"])
        else:
            raise DeliveryError(f"unsupported integration {integration!r}", retry=False)

    def _send_email(self, config: dict[str, Any], task: dict[str, Any], point: str) -> None:
        smtp = self.settings.smtp
        if smtp is None:
            raise DeliveryError("email is not configured on this server (taskreport serve --smtp-host)", retry=False)
        to = config.get("to")
        recipients = [to] if isinstance(to, str) else [str(r) for r in to or []]
        if not recipients:
            raise DeliveryError('the action\'s config has no "to" address', retry=False)
        allowed = self.settings.email_domains
        if allowed is not None:
            # the whole message or nothing: a partial send would hide which recipients were dropped
            refused = [r for r in recipients if r.rpartition("@")[2].strip().lower().rstrip(".") not in allowed]
            if refused:
                raise DeliveryError(
                    f"email to {', '.join(refused)} refused: not in the server's email domains "
                    "(taskreport serve --email-domains)",
                    retry=False,
                )
        message = email.message.EmailMessage()
        message["From"] = smtp.sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = f"[taskreport] {task['name']}: {point}"
        lines = [
            f"Task {task['name']!r} reached {point}.",
            "",
            f"status: {task['status']}",
            f"progress: {task['value_percent'] if task['value_percent'] is not None else '-'}%",
            f"url: {task['url']}",
        ]
        message.set_content("\n".join(lines) + "\n")
        try:
            with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout) as client:
                if smtp.starttls:
                    client.starttls(context=ssl.create_default_context())
                if smtp.username:
                    client.login(smtp.username, smtp.password or "")
                client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"SMTP server refused the recipients: {exc}", retry=False) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"SMTP: {type(exc).__name__}: {exc}") from None
