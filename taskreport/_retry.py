"""When delivery may send again: backoff after failed rounds, pauses the service asks for, and what each
error means for the change that met it."""

from __future__ import annotations

import enum
import random
import time

from ._errors import RateLimited, TaskReportError, Unauthorized, is_transient

#: retry backoff after connection errors and 5xx, in seconds
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
#: the longest pause a Retry-After can impose, in seconds
MAX_RETRY_AFTER = 300.0
#: while someone waits in flush() (or at exit), retry this often at most despite a longer backoff
URGENT_RETRY = 0.25


class Verdict(enum.Enum):
    RETRY = "retry"  #: keep the change and send it again later
    DROP = "drop"  #: the service refuses this change and always will
    STOP = "stop"  #: the service refuses our credentials: stop reporting


def judge(exc: TaskReportError) -> Verdict:
    if isinstance(exc, Unauthorized):
        return Verdict.STOP
    # a 500 is retried too: the latest state is kept and sent again, never thrown away on a server bug
    if is_transient(exc) or (exc.status_code or 0) >= 500 or exc.retry_after is not None:
        return Verdict.RETRY
    return Verdict.DROP


class RetryPolicy:
    """Backoff per failed round (however many tasks it carried), and pauses asked for by Retry-After."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.failures = 0
        self.backoff_until = 0.0
        self.paused_until = 0.0
        self.last_attempt = 0.0

    def earliest(self, urgent: bool) -> float:
        """The monotonic time before which no round may be sent."""
        if self.paused_until > self.backoff_until:
            return self.paused_until  # asked by the service: even a flush waits for it
        if urgent:
            # someone is waiting: try again soon, but not in a tight loop
            return min(self.backoff_until, self.last_attempt + URGENT_RETRY) if self.failures else 0.0
        return self.backoff_until

    def attempted(self) -> None:
        self.last_attempt = time.monotonic()

    def round_succeeded(self) -> None:
        self.failures = 0
        self.backoff_until = 0.0

    def round_failed(self) -> None:
        self.failures += 1
        cap = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(self.failures - 1, 16))
        self.backoff_until = time.monotonic() + random.uniform(cap / 2, cap)

    def pause(self, exc: TaskReportError) -> None:
        # honoured, up to a point: one odd header must not silence reporting for a day
        wait = min(exc.retry_after if exc.retry_after is not None else self.interval, MAX_RETRY_AFTER)
        self.paused_until = max(self.paused_until, time.monotonic() + wait)

    @staticmethod
    def asks_pause(exc: TaskReportError) -> bool:
        return isinstance(exc, RateLimited) or exc.retry_after is not None
