"""Listing tasks: filters and keyset pagination (a page costs the same wherever it is in the list)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any

from .._errors import ValidationError
from .._status import VALUES as STATUS_VALUES
from ._db import Cursor
from ._rows import Page, Scope, task_out

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
#: tag filters one listing may combine; each is a subquery, and databases limit how many a query may hold
MAX_TAG_FILTERS = 20
_KEY_MAX = 2**63 - 1


def encode_cursor(direction: str, key: int) -> str:
    return base64.urlsafe_b64encode(f"{direction}:{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        direction, text = raw.split(":", 1)
        if direction not in ("n", "p") or not (text.isascii() and text.isdigit()) or len(text) > 19:
            raise ValueError(direction)
        key = int(text)
        if key > _KEY_MAX:
            raise ValueError(text)
        return direction, key
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError("Invalid cursor", attr="cursor", code="invalid_cursor") from None


def split_tag(tag: str) -> tuple[str, str]:
    key, sep, value = str(tag).partition(":")
    if not sep or not key:
        raise ValidationError("must be namespace:value.", attr="tag")
    return key, value


def _statuses(status: str | Iterable[str]) -> list[str]:
    items = [status] if isinstance(status, str) else list(status)
    wanted: list[str] = []
    for item in items:
        for text in str(getattr(item, "value", item)).split(","):
            name = text.strip()
            if name not in STATUS_VALUES:
                raise ValidationError(f"{name!r} is not a valid status.", attr="status", code="invalid_choice")
            if name not in wanted:
                wanted.append(name)
    return wanted


def _tags(tag: str | Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    if isinstance(tag, Mapping):
        tags = dict(tag)
    else:
        tags = dict(split_tag(t) for t in ([tag] if isinstance(tag, str) else tag))
    if len(tags) > MAX_TAG_FILTERS:
        raise ValidationError(f"at most {MAX_TAG_FILTERS} tag filters may be combined.", attr="tag")
    return tags


class ListingOps:
    cur: Cursor

    def list_tasks(
        self,
        scope: Scope,
        *,
        status: str | Iterable[str] | None = None,
        name: str | None = None,
        tag: str | Iterable[str] | Mapping[str, str] | None = None,
        parent: str | None = None,
        external_id: str | None = None,
        ref: str | None = None,
        cursor: str | None = None,
        page_size: int | None = None,
    ) -> Page:
        """Newest first. Every filter given must match: ``status`` one or several (a list, or comma-separated),
        ``tag`` ``"key:value"``, several of them, or a mapping; ``ref`` the task's reference."""
        size = DEFAULT_PAGE_SIZE if page_size is None else page_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValidationError("must be a positive integer.", attr="page_size")
        size = min(size, MAX_PAGE_SIZE)
        where = ["project_id = ?"]
        params: list[Any] = [scope.project_id]
        if status is not None:
            statuses = _statuses(status)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        equals = {"name": name, "parent": parent, "external_id": external_id, "idempotency_key": ref}
        for column, equal in equals.items():
            if equal is not None:
                where.append(f"{column} = ?")
                params.append(equal)
        if tag is not None:
            for tag_key, tag_value in _tags(tag).items():
                where.append("id IN (SELECT task_id FROM task_tags WHERE tag_key = ? AND tag_value = ?)")
                params.extend([tag_key, tag_value])
        direction, key = decode_cursor(cursor) if cursor else ("n", None)
        if key is not None:
            where.append("id < ?" if direction == "n" else "id > ?")
            params.append(key)
        order = "DESC" if direction == "n" else "ASC"
        rows = self.cur.all(
            f"SELECT * FROM tasks WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT ?",
            [*params, size + 1],
        )
        more = len(rows) > size
        rows = rows[:size]
        if direction == "p":
            rows.reverse()
        page = Page([task_out(r, scope) for r in rows])
        if rows:
            first, last = rows[0]["id"], rows[-1]["id"]
            if (direction == "n" and more) or (direction == "p" and key is not None):
                page.next_cursor = encode_cursor("n", last)
            if (direction == "p" and more) or (direction == "n" and key is not None):
                page.previous_cursor = encode_cursor("p", first)
        elif key is not None:
            # an empty page past either end still lets the caller walk back
            page.previous_cursor = encode_cursor("p", key) if direction == "n" else None
            page.next_cursor = encode_cursor("n", key) if direction == "p" else None
        return page
