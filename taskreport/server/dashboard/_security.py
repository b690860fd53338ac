"""Signing for the dashboard (itsdangerous, keyed by the secret kept in the store): session cookies, CSRF tokens
and public links.

- The session cookie holds a random session key, signed with a timestamp: a forged or expired cookie is
  refused without a database read; a well-signed one is looked up (``dashboard_sessions``, by the key's hash),
  so signing out ends the session in every server process at once.
- A CSRF token is the session's key hash (or, before sign-in, the random nonce of a short-lived cookie)
  signed: every form carries it, every POST checks it against the cookie it came with. The ``Origin`` header,
  when a browser sends it, must be this server's too.
- A public link is a task's id signed: unguessable without the secret, checked without a lookup table, the
  same in every server process. Rotating the secret (``taskreport admin dashboard-secret --rotate``) ends
  every session and every public link.
"""

from __future__ import annotations

import hmac

from itsdangerous import BadSignature, Signer, TimestampSigner, URLSafeSerializer

SESSION_COOKIE = "taskreport_session"
LOGIN_COOKIE = "taskreport_login"


#: public links kept signed per secret (the tasks being written now; a rotated secret starts afresh)
PUBLIC_TOKENS_KEPT = 10_000


class Keys:
    """Everything signed with one secret."""

    def __init__(self, secret: str) -> None:
        self._session = TimestampSigner(secret, salt="taskreport.dashboard.session")
        self._csrf = URLSafeSerializer(secret, salt="taskreport.dashboard.csrf")
        self._public = Signer(secret, salt="taskreport.dashboard.public-task")
        #: every task answer carries its public link: an HMAC each time cost a busy server 4% of a PATCH
        self._public_tokens: dict[str, str] = {}

    # -- sessions ----------------------------------------------------------------------------------
    def session_cookie(self, key: str) -> str:
        return self._session.sign(key).decode()

    def session_key(self, cookie: str | None, max_age: float) -> str | None:
        if not cookie:
            return None
        try:
            return self._session.unsign(cookie, max_age=int(max_age)).decode()
        except BadSignature:  # SignatureExpired included
            return None

    # -- CSRF --------------------------------------------------------------------------------------
    def csrf_token(self, binding: str) -> str:
        return self._csrf.dumps(binding)

    def csrf_ok(self, token: str | None, binding: str | None) -> bool:
        if not token or not binding:
            return False
        try:
            value = self._csrf.loads(token)
        except BadSignature:
            return False
        return isinstance(value, str) and hmac.compare_digest(value, binding)

    # -- public links ------------------------------------------------------------------------------
    def public_token(self, task_id: str) -> str:
        token = self._public_tokens.get(task_id)
        if token is None:
            if len(self._public_tokens) >= PUBLIC_TOKENS_KEPT:
                self._public_tokens.clear()
            token = self._public_tokens[task_id] = self._public.sign(task_id).decode()
        return token

    def public_task(self, token: str) -> str | None:
        try:
            return self._public.unsign(token).decode()
        except BadSignature:
            return None
