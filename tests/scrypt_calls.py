"""A fixture (loaded by conftest.py) that records the (n, r, p) of every scrypt run in this process (the
server's too, when it runs in a thread here): what tests of a password's cost assert.

The digest is still scrypt's, computed at N = 1024 whatever N is asked for, so that a hash made here checks
here: the tests assert which cost is asked for and how often, not how long it takes. The real cost is run by
``test_passwords_are_hashed_at_owasps_cost``, and timed by ``bench/server_login_timing.py``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from taskreport._store import _passwords as passwords

__all__ = ["scrypts"]


@pytest.fixture
def scrypts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    calls: list[tuple[int, int, int]] = []
    real = hashlib.scrypt

    def counting(password: bytes, **kwargs: Any) -> bytes:
        calls.append((kwargs["n"], kwargs["r"], kwargs["p"]))
        return real(password, **{**kwargs, "n": 1024})

    monkeypatch.setattr(hashlib, "scrypt", counting)  # the module the store calls it from
    monkeypatch.delenv(passwords.COST_ENV, raising=False)  # the real cost asked for, not the suite's
    return calls
