"""What delivery is configured with, taken from the client's configuration."""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Settings:
    """What delivery needs to know, taken from the configuration by the client."""

    interval: float = 1.0
    strict: bool = False
    request_timeout: float = 10.0
    #: where undeliverable changes are spooled at exit; None: not spooled (and the loss is logged)
    spool_dir: Path | None = None
    #: names where tasks go, so that a spool is only delivered to the place it was meant for
    target: str = ""
    #: False: no thread; changes are delivered only when someone flushes (tests' in-memory recorders)
    threaded: bool = True
