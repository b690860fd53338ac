"""Password and token hashing. Passwords get scrypt at OWASP's recommended cost; tokens, being 256 random
bits, a plain SHA-256.

A stored password hash names its own cost (``scrypt$N$r$p$salt$digest``), so hashes made at an older, lower
cost keep working; :func:`needs_rehash` tells the login to store a new one.

``TASKREPORT_SCRYPT_N`` (a power of two, 1024 at least) lowers N for new hashes: for test suites that start
servers and create users by the hundred, where 128 MiB and a quarter second a hash is all cost and no
protection. It never weakens a stored hash: one made at a higher cost is kept as it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading

from .._errors import ConfigurationError

#: OWASP Password Storage Cheat Sheet: N=2^17 (128 MiB), r=8, p=1
SCRYPT_N = 2**17
COST_ENV = "TASKREPORT_SCRYPT_N"
_MIN_N = 2**10
SCRYPT_R = 8
SCRYPT_P = 1
_DKLEN = 32
#: each scrypt holds 128 * N * r bytes; at most this many run at once, so a burst of logins queues instead of
#: taking the machine's memory
_RUNNING = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))


def scrypt_n() -> int:
    """N for new hashes: SCRYPT_N, or what ``TASKREPORT_SCRYPT_N`` says."""
    raw = os.environ.get(COST_ENV, "").strip()
    if not raw:
        return SCRYPT_N
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < _MIN_N or n & (n - 1):
        raise ConfigurationError(f"{COST_ENV} must be a power of two of at least {_MIN_N}, not {raw!r}")
    return n


def _nobody(n: int) -> str:
    """A hash no password matches, at cost ``n``: checking against it costs what checking a real one does."""
    zeros = base64.b64encode(bytes(16)).decode(), base64.b64encode(bytes(_DKLEN)).decode()
    return "$".join(["scrypt", str(n), str(SCRYPT_R), str(SCRYPT_P), *zeros])


def hash_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    with _RUNNING:
        # maxmem: OpenSSL's default (32 MiB) is below what N=2^17 needs
        return hashlib.scrypt(
            password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, dklen=_DKLEN,
            maxmem=2 * 128 * n * r * p + 1024 * 1024,
        )  # fmt: skip


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    n = scrypt_n()
    digest = _scrypt(password, salt, n, SCRYPT_R, SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return None
        return int(n), int(r), int(p), base64.b64decode(salt), base64.b64decode(digest)
    except ValueError:
        return None


def check_password(password: str, stored: str) -> bool:
    parsed = _parse(stored)
    if parsed is None:
        return False
    n, r, p, salt, digest = parsed
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), digest)


def needs_rehash(stored: str) -> bool:
    """Whether a hash was made at a lower cost than today's."""
    parsed = _parse(stored)
    return parsed is None or parsed[0] < scrypt_n() or parsed[1:3] != (SCRYPT_R, SCRYPT_P)


def waste_a_check(password: str) -> None:
    """Spend what checking a password costs, for a user who does not exist: one scrypt at today's cost,
    exactly as a wrong password for a real user costs, so that timing tells no one which usernames exist."""
    check_password(password, _nobody(scrypt_n()))
