"""The server suite's fixtures live in tests/server_fixtures.py, so that other suites can use them too."""

from __future__ import annotations

import sys
from pathlib import Path

# tests/ is on sys.path once tests/conftest.py is imported (rootdir-relative "prepend" import mode), but not
# when this directory is run on its own with another import mode
_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from receivers import receiver_factory, smtp_sink  # noqa: E402, F401
from server_fixtures import *  # noqa: E402, F403
