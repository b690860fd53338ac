"""Delivers action firings from the outbox: webhooks by HTTP POST (signed), email by SMTP, retried with backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._store import Row, Store
from .._version import __version__
from ._email import send_email
from ._responses import dumps, render_task
from ._settings import ServerSettings
from ._webhook import DeliveryError, post_webhook, refused_address, resolve_webhook, signature_headers

__all__ = ["Deliverer", "DeliveryError", "post_webhook", "refused_address", "resolve_webhook"]

logger = logging.getLogger("taskreport.server")


class Deliverer:
    """A thread that claims due firings and hands them to a small pool of senders."""

    def __init__(self, store: Store, settings: ServerSettings, base_url: Callable[[], str]) -> None:
        self.store = store
        self.settings = settings
        self.base_url = base_url
        #: (base, task row) -> the task's public page (set by the dashboard); None: the API URL
        self.public_link: Callable[[str, Any], str] | None = None
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
            if not tx.has_due_firings(time.time()):
                return 0
        with self.store.transaction(write=True) as tx:
            firings = tx.claim_firings(time.time(), lease=self.lease)
            secrets: dict[int, str] = {}
            for firing in firings:
                if firing["integration"].startswith("webhook:"):
                    project = firing["project_id"]
                    firing["secret"] = secrets.get(project) or secrets.setdefault(project, tx.webhook_secret(project))
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
            tx.record_attempt(firing, now, error=error, retry_at=retry_at)

    def send(self, firing: Row) -> None:
        integration: str = firing["integration"]
        config: Any = firing["config"] if isinstance(firing["config"], dict) else {}
        task = render_task(firing["payload"], self.base_url(), self.public_link)
        if integration.startswith("webhook:"):
            body = dumps(task)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"taskreport-server/{__version__}",
                "X-Taskreport-Trigger": firing["point"],
                # the same id on every retry of this firing, so that a receiver can drop repeats
                **signature_headers(firing["secret"], f"firing_{firing['id']}", int(time.time()), body),
            }
            post_webhook(
                str(config.get("url", "")),
                body,
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
        lines = [
            f"Task {task['name']!r} reached {point}.",
            "",
            f"status: {task['status']}",
            f"progress: {task['value_percent'] if task['value_percent'] is not None else '-'}%",
            f"url: {task['url']}",
        ]
        subject = f"[taskreport] {task['name']}: {point}"
        send_email(smtp, config.get("to"), subject, "\n".join(lines) + "\n", self.settings.email_domains)
