"""Integrations with other frameworks (Celery, logging, OpenTelemetry) live in this package, one module each.

Pass instances to ``taskreport.init(integrations=[...])``. Each follows the same rules: its class's
:meth:`Integration.setup_once` installs the framework's hooks once per process, however often ``init()``
runs; its framework is imported only then, and a missing or too old one raises :class:`DidNotEnable`
naming it; and its hooks do nothing at all while reporting is switched off or while the current client was
made without it. An integration reports through the same tracking API as user code (``Task``,
``current_task()``, ``use_task()``), so it inherits the flusher's guarantees and its fork handling.
"""

from __future__ import annotations

from .._integration import DidNotEnable, Integration, require

__all__ = ["DidNotEnable", "Integration", "require"]
