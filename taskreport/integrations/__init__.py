"""Integrations with other frameworks (Celery, logging, OpenTelemetry) live in this package, one module each.

Each follows the same rules: it is installed by one idempotent call; its framework is imported only when
it is installed (and a missing one is named in a clear error); and it does nothing at all while
reporting is switched off. An integration reports through the same tracking API as user code
(``Task``, ``current_task()``), so it inherits the flusher's guarantees and its fork handling.
"""

from __future__ import annotations

__all__: list[str] = []
