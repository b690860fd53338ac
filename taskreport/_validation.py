"""Field rules for tasks and actions, from the API schema; shared by the client and the server.

Every function raises :class:`~taskreport.ValidationError` naming the offending field, and returns the
fields normalised: statuses as strings, timestamps as epoch seconds, JSON values checked.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import ValidationError
from ._status import VALUES as STATUS_VALUES
from ._timeutil import parse_timestamp

INT64_MAX = 2**63 - 1
#: the epoch seconds a datetime can represent (years 1 to 9999, UTC)
EPOCH_MIN = -62135596800.0
EPOCH_MAX = 253402300799.0
INT32_MAX = 2**31 - 1
#: a task reference: 16 to 64 characters that survive any header, URL or environment variable as they are
REF_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")

#: Fields a client may write on a task.
TASK_FIELDS = (
    "name",
    "queue",
    "external_id",
    "status",
    "value",
    "value_max",
    "data",
    "start_time",
    "end_time",
    "time_to_start",
    "max_runtime",
    "stale_timeout",
    "tags",
    "parent",
)
#: Fields the service computes; a stock client may echo them back in a PUT, and they are ignored there.
TASK_READ_ONLY = frozenset(
    {"id", "organization", "project", "value_percent", "created", "updated", "url", "public_url"}
)


def valid_text(field: str, value: str) -> str:
    """``value`` if it is valid Unicode text. A lone surrogate (JSON ``"\\udfff"``, or a str decoded with
    ``surrogateescape``) can be neither stored nor sent as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start : exc.start + 1].encode("unicode_escape").decode()
        raise ValidationError(
            f"must be valid text: {bad} at position {exc.start} is a lone surrogate.", attr=field, code="invalid"
        ) from None
    return value


def validate_ref(value: Any, attr: str = "ref") -> str:
    """A task reference: a string of 16-64 characters from ``[A-Za-z0-9_-]``."""
    if not isinstance(value, str) or not REF_PATTERN.fullmatch(value):
        raise ValidationError("must be 16-64 letters, digits, '-' or '_'.", attr=attr, code="invalid")
    return value


def _string(field: str, value: Any, *, min_len: int = 0, max_len: int = 255, nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"must be a string, not {type(value).__name__}.", attr=field)
    if len(value) < min_len:
        if min_len == 1:
            raise ValidationError("may not be blank.", attr=field, code="blank")
        raise ValidationError(f"must have at least {min_len} characters.", attr=field, code="min_length")
    if len(value) > max_len:
        raise ValidationError(f"must have at most {max_len} characters.", attr=field, code="max_length")
    if "\x00" in value:
        # PostgreSQL text can't hold NUL: refused here rather than as a server error on every retry
        raise ValidationError("may not contain NUL characters.", attr=field, code="null_characters_not_allowed")
    return valid_text(field, value)


def _integer(field: str, value: Any, *, lo: int, hi: int, nullable: bool) -> int | None:
    if value is None:
        if nullable:
            return None
        raise ValidationError("may not be null.", attr=field, code="null")
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValidationError(f"must be an integer, not {value!r}.", attr=field, code="invalid")
    if value < lo:
        raise ValidationError(f"must be greater than or equal to {lo}.", attr=field, code="min_value")
    if value > hi:
        raise ValidationError(f"must be less than or equal to {hi}.", attr=field, code="max_value")
    return int(value)


def _check_keys(field: str, value: Any) -> None:
    # json.dumps turns 1 into "1" silently, so {1: .., "1": ..} would lose a key on the way
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"must be JSON-serialisable: key {key!r} is not a string.", attr=field)
            _check_keys(field, item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_keys(field, item)


def check_json(field: str, value: Any) -> Any:
    """``value`` if it serialises to strict JSON of valid text (no NaN, string keys, no lone surrogate);
    ValidationError otherwise."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(f"must be JSON-serialisable: {exc}.", attr=field) from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            "must be valid text: a string in it holds a lone surrogate.", attr=field, code="invalid"
        ) from None
    _check_keys(field, value)
    return value


def _status(field: str, value: Any) -> str:
    text = getattr(value, "value", value)
    if not isinstance(text, str) or text not in STATUS_VALUES:
        choices = ", ".join(sorted(STATUS_VALUES))
        raise ValidationError(f"{value!r} is not a valid choice ({choices}).", attr=field, code="invalid_choice")
    return text


def _timestamp(field: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        epoch = parse_timestamp(value)
    except (TypeError, ValueError, OverflowError):
        raise ValidationError(
            f"must be a datetime or an ISO 8601 string, not {value!r}.", attr=field, code="invalid"
        ) from None
    if not math.isfinite(epoch) or not EPOCH_MIN <= epoch <= EPOCH_MAX:
        # milliseconds passed as seconds land here: far outside what a datetime can show
        raise ValidationError("must be a time between the years 1 and 9999.", attr=field)
    return epoch


def _duration(field: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValidationError(f"must be a number of seconds, not {value!r}.", attr=field)
    return seconds


def _tags(field: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValidationError("must be a mapping of namespace to value.", attr=field)
    out: dict[str, str] = {}
    for key, tag in value.items():
        _string(f"{field}.{key}", key, min_len=1, max_len=255)
        out[key] = _string(f"{field}.{key}", tag, min_len=2, max_len=255)
    return out


def _parent(field: str, value: Any) -> Any:
    if value is None:
        return None
    # the client may pass a Task handle whose id is not known yet; the flusher resolves it
    if hasattr(value, "_is_task_handle"):
        return value
    return _string(field, value, min_len=1, max_len=255)


_TASK_RULES: dict[str, Callable[[str, Any], Any]] = {
    "name": lambda f, v: _string(f, v, min_len=1),
    "queue": lambda f, v: _string(f, v, nullable=True),
    "external_id": lambda f, v: _string(f, v, nullable=True),
    "status": _status,
    "value": lambda f, v: _integer(f, v, lo=0, hi=INT64_MAX, nullable=True),
    "value_max": lambda f, v: _integer(f, v, lo=0, hi=INT64_MAX, nullable=False),
    "data": check_json,
    "start_time": _timestamp,
    "end_time": _timestamp,
    "time_to_start": _duration,
    "max_runtime": lambda f, v: _integer(f, v, lo=1, hi=INT32_MAX, nullable=True),
    "stale_timeout": lambda f, v: _integer(f, v, lo=1, hi=INT32_MAX, nullable=True),
    "tags": _tags,
    "parent": _parent,
}


def validate_task_field(field: str, value: Any) -> Any:
    rule = _TASK_RULES.get(field)
    if rule is None:
        raise ValidationError(f"unknown field; expected one of {', '.join(TASK_FIELDS)}.", attr=field)
    return rule(field, value)


def validate_task(fields: Mapping[str, Any], *, partial: bool, unknown: str = "raise") -> dict[str, Any]:
    """Normalised task fields. ``partial=False`` requires ``name``.

    ``unknown="ignore"`` drops read-only and unknown fields (what a server does with a stock client's PUT);
    ``"raise"`` rejects them (what the library does with a typo in a keyword argument).
    """
    out: dict[str, Any] = {}
    for field, value in fields.items():
        if field == "actions":
            out["actions"] = validate_actions(value)
            continue
        if field not in _TASK_RULES:
            if unknown == "ignore" or field in TASK_READ_ONLY:
                continue
            raise ValidationError(
                f"unknown field; expected one of {', '.join(TASK_FIELDS)}.", attr=field, code="unknown_field"
            )
        out[field] = _TASK_RULES[field](field, value)
    if not partial and "name" not in out:
        raise ValidationError("This field is required.", attr="name", code="required")
    return out


def validate_action(fields: Any, *, partial: bool, prefix: str = "") -> dict[str, Any]:
    if not isinstance(fields, Mapping):
        attr = prefix.rstrip(".") or None
        raise ValidationError("must be an object with trigger, integration and config.", attr=attr)
    out: dict[str, Any] = {}
    for field, value in fields.items():
        attr = f"{prefix}{field}"
        if field == "trigger":
            out[field] = _string(attr, value, min_len=1, max_len=255)
        elif field == "integration":
            out[field] = _string(attr, value, min_len=1, max_len=50)
        elif field == "config":
            out[field] = check_json(attr, value)
    if not partial:
        for required in ("trigger", "integration"):
            if required not in out:
                raise ValidationError("This field is required.", attr=f"{prefix}{required}", code="required")
    return out


def validate_actions(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ValidationError("must be a list of actions.", attr="actions")
    return [validate_action(item, partial=False, prefix=f"actions.{i}.") for i, item in enumerate(value)]


def _texts(to: Any) -> list[str]:
    if isinstance(to, str):
        return [to]
    if isinstance(to, list) and all(isinstance(item, str) for item in to):
        return list(to)
    raise ValueError("to must be an address or a list of addresses")


def parse_recipients(to: Any) -> list[str]:
    """The addresses in ``to`` (an address, a list of them, or a header-style list ``"a@x, B <b@y>"``), as
    ``email.utils.getaddresses`` reads them. ValueError if anything in it is not a plain ``local@domain``:
    a list that a mail server might read differently from this check (``"x@evil; ops@ok"``) is refused."""
    import email.utils  # here, not at import: the client imports this module, and rarely sends email

    texts = _texts(to)
    if not texts:
        raise ValueError("no address")
    for text in texts:
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ValueError(f"{text!r} holds a control character")
    parsed = email.utils.getaddresses(texts)
    addresses: list[str] = []
    for _name, address in parsed:
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain or "@" in local or any(c in address for c in " ,;<>\"'()[]\\"):
            raise ValueError(f"{', '.join(texts)!r} is not a list of plain addresses (local@domain)")
        addresses.append(address)
    if not addresses:
        raise ValueError("no address")
    return addresses
