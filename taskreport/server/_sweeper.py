"""Periodically marks tasks that stopped updating as stale and over-running ones as errors."""

from __future__ import annotations

import asyncio
import logging

from ._writer import Writer

logger = logging.getLogger("taskreport.server")


async def sweep_forever(writer: Writer, interval: float) -> None:
    """Sweep every ``interval`` seconds until cancelled. Runs through the writer, so a sweep never waits
    for SQLite's lock against this server's own writes."""
    while True:
        await asyncio.sleep(interval)
        try:
            changed = await writer.run(lambda tx: tx.sweep())
        except Exception:
            logger.exception("taskreport server: sweeping failed")
            continue
        for _scope, task, reason in changed:
            logger.info("taskreport server: task %s is now %s (%s)", task["id"], task["status"], reason)
