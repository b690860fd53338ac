"""Organizations, projects, users and API tokens. Secrets are stored only as hashes (but webhook signing
secrets, which the server needs in clear to sign with).

Organizations are made by :meth:`AccountOps.ensure_project` (or ``ensure_organization``) only: issuing a
token, making a user or adding a member names an organization that must exist, so that a typo fails instead
of making a new, empty organization.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import secrets
import time

from .._errors import NotFound, ValidationError
from ._db import Cursor, Row
from ._passwords import check_password, hash_password, hash_token, needs_rehash, waste_a_check
from ._rows import Scope

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
TOKEN_PREFIX = "trk_"
WEBHOOK_SECRET_PREFIX = "whsec_"
_ID_MAX = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class TokenInfo:
    """What a valid token grants: one organization, on behalf of a user or of no one."""

    id: int
    organization_id: int
    organization: str
    user_id: int | None
    prefix: str


def _check_slug(field: str, slug: str) -> str:
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise ValidationError("must be 1-100 letters, digits, '-' or '_'.", attr=field)
    return slug


def _new_webhook_secret() -> str:
    # as Standard Webhooks spells a secret: whsec_ and 32 random bytes in base64
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class AccountOps:
    cur: Cursor

    # -- organizations and projects ----------------------------------------------------------------
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

    def organization_id(self, slug: str) -> int:
        """The id of an existing organization; NotFound names it otherwise."""
        row = self.cur.one("SELECT id FROM organizations WHERE slug = ?", (slug,))
        if row is None:
            raise NotFound(f"no organization {slug!r}")
        return int(row["id"])

    def ensure_project(self, organization: str, project: str, name: str | None = None) -> Scope:
        org_id = self.ensure_organization(organization)
        _check_slug("project", project)
        query = "SELECT id FROM projects WHERE organization_id = ? AND slug = ?"
        row = self.cur.one(query, (org_id, project))
        if row is None:
            self.cur.execute(
                "INSERT INTO projects (organization_id, slug, name, created, webhook_secret) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (organization_id, slug) DO NOTHING",
                (org_id, project, name or project, time.time(), _new_webhook_secret()),
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

    def webhook_secret(self, project_id: int, *, rotate: bool = False) -> str:
        """The secret a project's webhook deliveries are signed with; made on first use (projects from before
        signing have none), or replaced with ``rotate``."""
        if rotate:
            self.cur.execute("UPDATE projects SET webhook_secret = ? WHERE id = ?", (_new_webhook_secret(), project_id))
        secret = self.cur.scalar("SELECT webhook_secret FROM projects WHERE id = ?", (project_id,))
        if secret is None:
            self.cur.execute(
                "UPDATE projects SET webhook_secret = ? WHERE id = ? AND webhook_secret IS NULL",
                (_new_webhook_secret(), project_id),
            )
            secret = self.cur.scalar("SELECT webhook_secret FROM projects WHERE id = ?", (project_id,))
        if secret is None:
            raise NotFound(f"no project with id {project_id}")
        return str(secret)

    # -- users -------------------------------------------------------------------------------------
    def organization_slugs(self, user_id: int) -> list[str]:
        rows = self.cur.all(
            "SELECT o.slug FROM memberships m JOIN organizations o ON o.id = m.organization_id"
            " WHERE m.user_id = ? ORDER BY o.slug",
            (user_id,),
        )
        return [r["slug"] for r in rows]

    def create_user(self, username: str, password: str, organization: str) -> int:
        """A user of an existing organization (NotFound otherwise)."""
        if not username or len(username) > 150:
            raise ValidationError("must be 1-150 characters.", attr="username")
        if len(password) < 8:
            raise ValidationError("must have at least 8 characters.", attr="password")
        org_id = self.organization_id(organization)
        if self.cur.one("SELECT id FROM users WHERE username = ?", (username,)):
            raise ValidationError("A user with that username already exists.", attr="username", code="unique")
        user_id = self.cur.insert(
            "INSERT INTO users (username, password_hash, created) VALUES (?, ?, ?)",
            (username, hash_password(password), time.time()),
        )
        self.cur.execute("INSERT INTO memberships (user_id, organization_id) VALUES (?, ?)", (user_id, org_id))
        return user_id

    def user_id(self, username: str) -> int | None:
        found = self.cur.scalar("SELECT id FROM users WHERE username = ?", (username,))
        return None if found is None else int(found)

    def get_user(self, user_id: int) -> Row | None:
        """``{"id", "username", "accounts"}`` (the user's organizations), or None."""
        row = self.cur.one("SELECT id, username FROM users WHERE id = ?", (user_id,))
        if row is not None:
            row["accounts"] = self.organization_slugs(user_id)
        return row

    def add_member(self, username: str, organization: str) -> None:
        user = self.user_id(username)
        if user is None:
            raise NotFound(f"no user {username!r}")
        org_id = self.organization_id(organization)
        self.cur.execute(
            "INSERT INTO memberships (user_id, organization_id) VALUES (?, ?) ON CONFLICT DO NOTHING", (user, org_id)
        )

    def authenticate_user(self, username: str, password: str) -> Row | None:
        """The user (``id``, ``username``, ``created``, and ``rehash``: the stored hash is of an older cost and
        :meth:`set_password` should be given the password again), or None. Unknown users and wrong
        passwords cost the same time."""
        row = self.cur.one("SELECT * FROM users WHERE username = ?", (username,))
        if row is None:
            waste_a_check(password)
            return None
        stored = row.pop("password_hash")
        if not check_password(password, stored):
            return None
        row["rehash"] = needs_rehash(stored)
        return row

    def set_password(self, user_id: int, password_hash: str) -> None:
        """Store a hash made by :func:`hash_password` (made outside the transaction: it is slow on purpose)."""
        self.cur.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))

    # -- tokens ------------------------------------------------------------------------------------
    def has_tokens(self) -> bool:
        return bool(self.cur.scalar("SELECT 1 FROM tokens LIMIT 1"))

    def create_token(self, organization: str, *, user_id: int | None = None, name: str = "") -> str:
        """A new API key for an existing ``organization``. The key is returned once and stored only as a hash."""
        org_id = self.organization_id(organization)
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
        """Revoke an active token; NotFound when there is no such token or it is revoked already."""
        done = None
        if 0 < int(token_id) <= _ID_MAX:
            done = self.cur.execute(
                "UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL", (time.time(), int(token_id))
            )
        if done is None or done.rowcount != 1:
            raise NotFound(f"no active token with id {token_id}")

    def rotate_token(self, token_id: int) -> str:
        """Revoke a token and issue a replacement for the same organization, user and name."""
        row = None
        if 0 < int(token_id) <= _ID_MAX:
            row = self.cur.one(
                "SELECT t.*, o.slug FROM tokens t JOIN organizations o ON o.id = t.organization_id"
                " WHERE t.id = ? AND t.revoked IS NULL",
                (int(token_id),),
            )
        if row is None:
            raise NotFound(f"no active token with id {token_id}")
        self.revoke_token(token_id)
        return self.create_token(row["slug"], user_id=row["user_id"], name=row["name"])

    def keep_newest_tokens(self, user_id: int, name: str, keep: int) -> list[str]:
        """Revoke a user's live tokens called ``name`` beyond the newest ``keep``; returns their key hashes
        (for a token cache to forget)."""
        live = self.cur.all(
            "SELECT id, key_hash FROM tokens WHERE user_id = ? AND name = ? AND revoked IS NULL ORDER BY id DESC",
            (user_id, name),
        )
        old = live[max(1, keep) :]
        for row in old:
            self.revoke_token(row["id"])
        return [row["key_hash"] for row in old]
