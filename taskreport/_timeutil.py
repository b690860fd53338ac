"""Timestamps: epoch seconds inside, ISO 8601 (UTC, ``Z``) on the wire."""

from __future__ import annotations

import datetime as _dt

UTC = _dt.timezone.utc


def to_iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return _dt.datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def parse_timestamp(value: object) -> float:
    """Epoch seconds from a datetime, a number of epoch seconds or an ISO 8601 string.

    Raises ValueError (or TypeError) for anything else; naive datetimes are taken as UTC.
    """
    if isinstance(value, bool):
        raise TypeError("expected a datetime")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        value = _dt.datetime.fromisoformat(text)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    raise TypeError("expected a datetime")


def from_epoch(epoch: float | None) -> _dt.datetime | None:
    return None if epoch is None else _dt.datetime.fromtimestamp(epoch, UTC)
