"""Organizations, projects, users and API tokens. Secrets are stored only as hashes."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import secrets
import time

from .._errors import NotFound, ValidationError
from ._db import Cursor, Row
from ._tasks import Scope

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
TOKEN_PREFIX = "trk_"


@dataclasses.dataclass(frozen=True)
class TokenInfo:
    """What a valid token grants: one organization, on behalf of a user or of no one."""

    id: int
    organization_id: int
    organization: str
    user_id: int | None
    prefix: str


def hash_token(key: str) -> str:
    # tokens are 256 random bits, so a fast hash is enough; passwords get scrypt
    return hashlib.sha256(key.encode()).hexdigest()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    return hmac.compare_digest(got, base64.b64decode(digest))


def _check_slug(field: str, slug: str) -> str:
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise ValidationError("must be 1-100 letters, digits, '-' or '_'.", attr=field)
    return slug


class AccountOps:
    cur: Cursor

    def ensure_organization(self, slug: str, name: str | None = None) -> int:
        _check_slug("organization", slug)
        row = self.cur.one("SELECT id FROM organizations WHERE slug = ?", (slug,))
        if row is None:
            # two processes may both be first: the loser's insert does nothing and it reads the winner's row
            self.cur.execute(
                "INSERT INTO organizations (slug, name, created) VALUES (?, ?, ?) ON CONFLICT (slug) DO NOTHING",
                (slug, name or slug, time.time()),
            )
            row = self.cur.one("SELECT id FROM organizations WHERE slug = ?", (slug,))
        assert row is not None
        return int(row["id"])

    def ensure_project(self, organization: str, project: str, name: str | None = None) -> Scope:
        org_id = self.ensure_organization(organization)
        _check_slug("project", project)
        query = "SELECT id FROM projects WHERE organization_id = ? AND slug = ?"
        row = self.cur.one(query, (org_id, project))
        if row is None:
            self.cur.execute(
                "INSERT INTO projects (organization_id, slug, name, created) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (organization_id, slug) DO NOTHING",
                (org_id, project, name or project, time.time()),
            )
            row = self.cur.one(query, (org_id, project))
        assert row is not None
        return Scope(org_id, organization, int(row["id"]), project)

    def get_scope(self, organization: str, project: str) -> Scope | None:
        row = self.cur.one(
            "SELECT o.id AS org_id, p.id AS project_id FROM projects p JOIN organizations o"
            " ON o.id = p.organization_id WHERE o.slug = ? AND p.slug = ?",
            (organization, project),
        )
        return None if row is None else Scope(row["org_id"], organization, row["project_id"], project)

    def list_projects(self, organization: str | None = None) -> list[Row]:
        query = (
            "SELECT o.slug AS organization, p.slug AS project, p.name AS name, p.created AS created"
            " FROM projects p JOIN organizations o ON o.id = p.organization_id"
        )
        if organization is None:
            return self.cur.all(query + " ORDER BY o.slug, p.slug")
        return self.cur.all(query + " WHERE o.slug = ? ORDER BY p.slug", (organization,))

    def organization_slugs(self, user_id: int) -> list[str]:
        rows = self.cur.all(
            "SELECT o.slug FROM memberships m JOIN organizations o ON o.id = m.organization_id"
            " WHERE m.user_id = ? ORDER BY o.slug",
            (user_id,),
        )
        return [r["slug"] for r in rows]

    # -- users -------------------------------------------------------------------------------------
    def create_user(self, username: str, password: str, organization: str) -> int:
        if not username or len(username) > 150:
            raise ValidationError("must be 1-150 characters.", attr="username")
        if len(password) < 8:
            raise ValidationError("must have at least 8 characters.", attr="password")
        if self.cur.one("SELECT id FROM users WHERE username = ?", (username,)):
            raise ValidationError("A user with that username already exists.", attr="username", code="unique")
        org_id = self.ensure_organization(organization)
        user_id = self.cur.insert(
            "INSERT INTO users (username, password_hash, created) VALUES (?, ?, ?)",
            (username, hash_password(password), time.time()),
        )
        self.cur.execute("INSERT INTO memberships (user_id, organization_id) VALUES (?, ?)", (user_id, org_id))
        return user_id

    def add_member(self, username: str, organization: str) -> None:
        user = self.cur.one("SELECT id FROM users WHERE username = ?", (username,))
        if user is None:
            raise NotFound(f"no user {username!r}")
        org_id = self.ensure_organization(organization)
        if not self.cur.one(
            "SELECT 1 AS x FROM memberships WHERE user_id = ? AND organization_id = ?", (user["id"], org_id)
        ):
            self.cur.execute("INSERT INTO memberships (user_id, organization_id) VALUES (?, ?)", (user["id"], org_id))

    def authenticate_user(self, username: str, password: str) -> Row | None:
        row = self.cur.one("SELECT * FROM users WHERE username = ?", (username,))
        if row is None:
            # spend the same time as a wrong password, so usernames can't be probed by timing
            check_password(password, hash_password("x" * 8))
            return None
        if not check_password(password, row["password_hash"]):
            return None
        row.pop("password_hash")
        return row

    # -- tokens ------------------------------------------------------------------------------------
    def create_token(self, organization: str, *, user_id: int | None = None, name: str = "") -> str:
        """A new API key for ``organization``. The key is returned once and stored only as a hash."""
        org_id = self.ensure_organization(organization)
        key = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.cur.insert(
            "INSERT INTO tokens (key_hash, prefix, organization_id, user_id, name, created) VALUES (?, ?, ?, ?, ?, ?)",
            (hash_token(key), key[: len(TOKEN_PREFIX) + 6], org_id, user_id, name, time.time()),
        )
        return key

    def token_info(self, key: str) -> TokenInfo | None:
        row = self.cur.one(
            "SELECT t.id, t.organization_id, t.user_id, t.prefix, o.slug FROM tokens t"
            " JOIN organizations o ON o.id = t.organization_id WHERE t.key_hash = ? AND t.revoked IS NULL",
            (hash_token(key),),
        )
        if row is None:
            return None
        return TokenInfo(row["id"], row["organization_id"], row["slug"], row["user_id"], row["prefix"])

    def list_tokens(self, organization: str | None = None) -> list[Row]:
        query = (
            "SELECT t.id, t.prefix, t.name, t.created, t.revoked, o.slug AS organization FROM tokens t"
            " JOIN organizations o ON o.id = t.organization_id"
        )
        if organization is None:
            return self.cur.all(query + " ORDER BY t.id")
        return self.cur.all(query + " WHERE o.slug = ? ORDER BY t.id", (organization,))

    def revoke_token(self, token_id: int) -> None:
        self.cur.execute("UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL", (time.time(), token_id))

    def rotate_token(self, token_id: int) -> str:
        """Revoke a token and issue a replacement for the same organization, user and name."""
        row = self.cur.one(
            "SELECT t.*, o.slug FROM tokens t JOIN organizations o ON o.id = t.organization_id"
            " WHERE t.id = ? AND t.revoked IS NULL",
            (token_id,),
        )
        if row is None:
            raise NotFound(f"no active token with id {token_id}")
        self.revoke_token(token_id)
        return self.create_token(row["slug"], user_id=row["user_id"], name=row["name"])
