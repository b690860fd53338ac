"""Password and token hashing. Passwords get scrypt at OWASP's recommended cost; tokens, being 256 random
bits, a plain SHA-256.

A stored password hash names its own cost (``scrypt$N$r$p$salt$digest``), so hashes made at an older, lower
cost keep working; :func:`needs_rehash` tells the login to store a new one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading

#: OWASP Password Storage Cheat Sheet: N=2^17 (128 MiB), r=8, p=1
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
_DKLEN = 32
#: each scrypt holds 128 * N * r bytes; at most this many run at once, so a burst of logins queues instead of
#: taking the machine's memory
_RUNNING = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))
#: a hash no password matches, at today's cost: checking against it costs what checking a real one does
_NOBODY = "$".join(
    ["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), base64.b64encode(bytes(16)).decode(),
     base64.b64encode(bytes(_DKLEN)).decode()]
)  # fmt: skip


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
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


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
    return parsed is None or parsed[:3] != (SCRYPT_N, SCRYPT_R, SCRYPT_P)


def waste_a_check(password: str) -> None:
    """Spend what checking a password costs, for a user who does not exist: one scrypt at today's cost,
    exactly as a wrong password for a real user costs, so that timing tells no one which usernames exist."""
    check_password(password, _NOBODY)
