"""What a server process is configured with; the CLI and the test fixtures build one of these."""

from __future__ import annotations

import dataclasses
import re

from .._errors import ConfigurationError

MAX_BODY_BYTES = 1024 * 1024
_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


@dataclasses.dataclass(frozen=True)
class RateLimit:
    """``requests`` per ``period`` seconds for each token, as a token bucket of that size."""

    requests: int
    period: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``"100/s"``, ``"600/minute"``, ``"5000/h"``."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*([a-z]+)\s*", text.lower())
        if not match or match.group(2) not in _PERIODS or int(match.group(1)) < 1:
            raise ConfigurationError(f"invalid rate limit {text!r}: use N/s, N/minute or N/hour")
        return cls(int(match.group(1)), _PERIODS[match.group(2)])


@dataclasses.dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 25
    sender: str = "taskreport@localhost"
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    starttls: bool = False
    timeout: float = 10.0


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    store_url: str
    #: scheme://host[:port] used in ``url``/``public_url``/``next``; None: in a response, taken from that
    #: request's Host; in a delivered webhook or email, ``bind_url``
    base_url: str | None = None
    #: where the server was bound (``taskreport serve`` sets it): the links in deliveries without a base_url.
    #: Never a request's Host header: anyone, unauthenticated, could set it for every organization's links
    bind_url: str | None = None
    rate_limit: RateLimit | None = None
    #: ``POST /api/authenticate/`` attempts per client address: each one costs an scrypt, and a limit is
    #: what makes guessing passwords slow. None: unlimited
    login_rate_limit: RateLimit | None = RateLimit(10, 60.0)
    #: live tokens a user keeps from logins; a new login revokes the oldest beyond this many
    login_tokens_per_user: int = 20
    #: how long a token lookup is reused: a revoked token keeps working for at most this long
    token_cache_seconds: float = 5.0
    sweep_interval: float = 30.0
    delivery_interval: float = 2.0
    delivery_attempts: int = 5
    #: first retry delay; doubled on each further attempt
    delivery_backoff: float = 5.0
    webhook_timeout: float = 10.0
    #: let webhooks reach loopback, private, link-local and other non-public addresses. Off: a token could
    #: otherwise make the server POST to services only its own network can reach
    allow_private_webhooks: bool = False
    #: the domains email actions may send to (lower case); None: any address
    email_domains: frozenset[str] | None = None
    smtp: SmtpSettings | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    #: seconds a request's body may pause before the request is answered with a 408 (a body shorter than its
    #: Content-Length would otherwise hold the request open for ever)
    read_timeout: float = 30.0
    #: operations one ``POST .../tasks/batch/`` may hold
    max_batch_ops: int = 1000
    #: writes committed together at most, by the group-commit writer
    max_batch: int = 256
    #: PostgreSQL: connections this process's pool opens at most, and writer threads among them (SQLite has
    #: one writer whatever this says: the database takes one at a time); with ``loop_progress``, one more
    db_pool_size: int = 10
    writer_threads: int = 6
    #: PostgreSQL: progress updates (a PATCH of value/value_max alone) written by the event loop itself, on a
    #: connection of its own beside the pool, instead of by a writer thread (see ``_progress``)
    loop_progress: bool = True

    def __post_init__(self) -> None:
        if self.email_domains is not None:
            # compared with the lower-cased domain of each address; any iterable of names is accepted
            domains = frozenset(d.strip().lower().rstrip(".") for d in self.email_domains if d.strip())
            object.__setattr__(self, "email_domains", domains)
