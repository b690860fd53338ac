"""Errors inside taskreport itself: logged once, never raised into user code, and visible to tests.

Every place that catches an unexpected exception so that the user's code goes on calls :func:`report`.
A test suite can register a hook that collects them and fails the test that caused one (the project's own
suite does, with an autouse fixture), so that a bug swallowed here never passes unseen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger("taskreport")

#: called with each internal error after it is logged
hooks: list[Callable[[BaseException], None]] = []


def report(message: str, exc: BaseException) -> None:
    logger.error("taskreport: %s", message, exc_info=(type(exc), exc, exc.__traceback__))
    for hook in list(hooks):
        hook(exc)
