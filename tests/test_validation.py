"""Field rules for tasks and actions (taskreport._validation), checked against the API schema's limits."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from taskreport._errors import TaskReportError, ValidationError
from taskreport._status import Status
from taskreport._validation import (
    INT32_MAX,
    INT64_MAX,
    TASK_FIELDS,
    TASK_READ_ONLY,
    parse_recipients,
    valid_text,
    validate_action,
    validate_actions,
    validate_ref,
    validate_task,
    validate_task_field,
)

S255 = "x" * 255
S256 = "x" * 256


class _Handle:
    """Stands in for a client Task handle whose id is not known yet."""

    _is_task_handle = True


def _invalid(fields: dict[str, Any], *, partial: bool = True) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        validate_task(fields, partial=partial)
    return info.value


# -- rejected values: (field, value, the attr the error must name) --------------------------------------
INVALID = [
    # name
    ("name", "", "name"),
    ("name", S256, "name"),
    ("name", 5, "name"),
    ("name", None, "name"),
    ("name", b"job", "name"),
    # queue / external_id
    ("queue", S256, "queue"),
    ("queue", 1, "queue"),
    ("external_id", S256, "external_id"),
    ("external_id", ["a"], "external_id"),
    # status
    ("status", "bogus", "status"),
    ("status", "PROCESSING", "status"),
    ("status", "", "status"),
    ("status", None, "status"),
    ("status", 1, "status"),
    # value: int64 >= 0, nullable
    ("value", -1, "value"),
    ("value", 2**63, "value"),
    ("value", True, "value"),
    ("value", False, "value"),
    ("value", "5", "value"),
    ("value", 1.5, "value"),
    ("value", math.nan, "value"),
    ("value", math.inf, "value"),
    # value_max: same range, not nullable
    ("value_max", -1, "value_max"),
    ("value_max", 2**63, "value_max"),
    ("value_max", True, "value_max"),
    ("value_max", "100", "value_max"),
    ("value_max", None, "value_max"),
    # data: must be strict JSON
    ("data", object(), "data"),
    ("data", math.nan, "data"),
    ("data", {"a": [1, {"b": math.inf}]}, "data"),
    ("data", {1, 2}, "data"),
    ("data", {"when": dt.datetime(2024, 1, 1)}, "data"),
    ("data", {(1, 2): "tuple key"}, "data"),
    # timestamps
    ("start_time", "not a date", "start_time"),
    ("start_time", "2024-13-01T00:00:00Z", "start_time"),
    ("start_time", True, "start_time"),
    ("start_time", [2024], "start_time"),
    ("start_time", math.inf, "start_time"),
    ("end_time", "yesterday", "end_time"),
    ("end_time", math.nan, "end_time"),
    # time_to_start: a non-negative number of seconds
    ("time_to_start", "abc", "time_to_start"),
    ("time_to_start", -1, "time_to_start"),
    ("time_to_start", True, "time_to_start"),
    ("time_to_start", math.nan, "time_to_start"),
    ("time_to_start", math.inf, "time_to_start"),
    ("time_to_start", [1], "time_to_start"),
    # max_runtime / stale_timeout: 1 .. 2**31-1
    ("max_runtime", 0, "max_runtime"),
    ("max_runtime", -5, "max_runtime"),
    ("max_runtime", 2**31, "max_runtime"),
    ("max_runtime", "60", "max_runtime"),
    ("max_runtime", True, "max_runtime"),
    ("stale_timeout", 0, "stale_timeout"),
    ("stale_timeout", 2**31, "stale_timeout"),
    ("stale_timeout", 2.5, "stale_timeout"),
    # tags: mapping of namespace -> 2..255 chars
    ("tags", ["env", "prod"], "tags"),
    ("tags", "env:prod", "tags"),
    ("tags", None, "tags"),
    ("tags", {"env": "p"}, "tags.env"),
    ("tags", {"env": ""}, "tags.env"),
    ("tags", {"env": S256}, "tags.env"),
    ("tags", {"env": 12}, "tags.env"),
    ("tags", {"env": None}, "tags.env"),
    ("tags", {"ok": "fine", "team": "x"}, "tags.team"),
    ("tags", {"k" * 256: "value"}, "tags." + "k" * 256),
    ("tags", {7: "value"}, "tags.7"),
    # parent: a task id
    ("parent", "", "parent"),
    ("parent", 42, "parent"),
    ("parent", S256, "parent"),
]


@pytest.mark.parametrize(("field", "value", "attr"), INVALID, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(INVALID)])
def test_invalid_field_names_the_field(field: str, value: Any, attr: str) -> None:
    err = _invalid({field: value})
    assert err.attr == attr
    assert err.status_code == 400
    assert isinstance(err, TaskReportError)
    assert isinstance(err, ValueError)
    # the message says which field, so a log line alone is enough to find the mistake
    assert str(err).startswith(f"{attr}: ")
    assert err.to_body() == {
        "type": "client_error",
        "errors": [{"code": err.code, "detail": err.detail, "attr": attr}],
    }


@pytest.mark.parametrize(("field", "value", "attr"), INVALID[:12], ids=[f for f, _, _ in INVALID[:12]])
def test_invalid_field_also_rejected_on_full_create(field: str, value: Any, attr: str) -> None:
    fields = {"name": "job", field: value}
    err = _invalid(fields, partial=False)
    assert err.attr == attr


@pytest.mark.parametrize(("field", "value", "attr"), INVALID)
def test_validate_task_field_agrees_with_validate_task(field: str, value: Any, attr: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_task_field(field, value)
    assert info.value.attr == attr


# -- accepted values: (field, value, normalised) ----------------------------------------------------------
_DT = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
_EPOCH = _DT.timestamp()

VALID = [
    ("name", "j", "j"),
    ("name", S255, S255),
    ("name", "ünïcode ✓", "ünïcode ✓"),
    ("queue", S255, S255),
    ("queue", "", ""),
    ("queue", None, None),
    ("external_id", S255, S255),
    ("external_id", None, None),
    ("status", "pending", "pending"),
    ("status", "stale", "stale"),
    ("status", Status.PROCESSING, "processing"),
    ("status", Status.CANCELLED, "cancelled"),
    ("value", None, None),
    ("value", 0, 0),
    ("value", 2**63 - 1, 2**63 - 1),
    ("value", 7.0, 7),
    ("value_max", 0, 0),
    ("value_max", 2**63 - 1, 2**63 - 1),
    ("data", None, None),
    ("data", {"a": [1, 2.5, None, True, {"b": {"c": "d"}}]}, {"a": [1, 2.5, None, True, {"b": {"c": "d"}}]}),
    ("data", [1, "two"], [1, "two"]),
    ("data", "just a string", "just a string"),
    ("start_time", None, None),
    ("start_time", _DT, _EPOCH),
    ("start_time", "2024-05-06T07:08:09Z", _EPOCH),
    ("start_time", "2024-05-06T07:08:09+00:00", _EPOCH),
    ("start_time", "2024-05-06T09:08:09+02:00", _EPOCH),
    ("start_time", dt.datetime(2024, 5, 6, 7, 8, 9), _EPOCH),  # naive: taken as UTC
    ("start_time", _EPOCH, _EPOCH),
    ("start_time", int(_EPOCH), float(int(_EPOCH))),
    ("end_time", "2024-05-06T07:08:09.500000Z", _EPOCH + 0.5),
    ("end_time", 0, 0.0),
    ("time_to_start", None, None),
    ("time_to_start", 0, 0.0),
    ("time_to_start", 1.5, 1.5),
    ("time_to_start", "2.25", 2.25),
    ("max_runtime", 1, 1),
    ("max_runtime", 2**31 - 1, 2**31 - 1),
    ("max_runtime", None, None),
    ("stale_timeout", 1, 1),
    ("stale_timeout", 2**31 - 1, 2**31 - 1),
    ("stale_timeout", None, None),
    ("tags", {}, {}),
    ("tags", {"env": "pr", "long": S255}, {"env": "pr", "long": S255}),
    ("parent", None, None),
    ("parent", "57ae8eVBrH7jbDgmYj6Ut2vR9S", "57ae8eVBrH7jbDgmYj6Ut2vR9S"),
    ("parent", S255, S255),
]


@pytest.mark.parametrize(("field", "value", "expected"), VALID, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(VALID)])
def test_valid_field_accepted_and_normalised(field: str, value: Any, expected: Any) -> None:
    out = validate_task({field: value}, partial=True)
    assert out == {field: expected}
    assert type(out[field]) is type(expected)


def test_limits_match_the_schema() -> None:
    assert INT64_MAX == 9223372036854775807
    assert INT32_MAX == 2147483647


def test_status_enum_member_becomes_plain_string() -> None:
    out = validate_task({"status": Status.SUCCESS}, partial=True)
    assert type(out["status"]) is str
    assert out["status"] == "success"


@pytest.mark.parametrize("status", list(Status))
def test_every_status_accepted_as_enum_and_string(status: Status) -> None:
    assert validate_task({"status": status}, partial=True) == {"status": status.value}
    assert validate_task({"status": status.value}, partial=True) == {"status": status.value}


def test_parent_may_be_an_unsent_task_handle() -> None:
    handle = _Handle()
    assert validate_task({"parent": handle}, partial=True)["parent"] is handle


def test_tags_are_copied_not_aliased() -> None:
    tags = {"env": "prod"}
    out = validate_task({"tags": tags}, partial=True)
    tags["env"] = "changed"
    assert out["tags"] == {"env": "prod"}


# -- required fields, unknown fields ------------------------------------------------------------------------
def test_name_required_on_create() -> None:
    err = _invalid({"status": "pending"}, partial=False)
    assert err.attr == "name"
    assert err.code == "required"


def test_name_not_required_on_partial_update() -> None:
    assert validate_task({"value": 3}, partial=True) == {"value": 3}
    assert validate_task({}, partial=True) == {}


def test_full_create_accepts_every_field() -> None:
    fields = {
        "name": "job",
        "queue": "default",
        "external_id": "celery-123",
        "status": "processing",
        "value": 5,
        "value_max": 10,
        "data": {"k": "v"},
        "start_time": "2024-05-06T07:08:09Z",
        "end_time": None,
        "time_to_start": 1,
        "max_runtime": 60,
        "stale_timeout": 30,
        "tags": {"env": "prod"},
        "parent": "abc",
    }
    assert set(fields) == set(TASK_FIELDS)
    out = validate_task(fields, partial=False)
    assert set(out) == set(TASK_FIELDS)
    assert out["start_time"] == _EPOCH


def test_unknown_field_raises_by_default() -> None:
    with pytest.raises(ValidationError) as info:
        validate_task({"name": "job", "valeu": 3}, partial=False)
    assert info.value.attr == "valeu"
    with pytest.raises(ValidationError) as info:
        validate_task_field("valeu", 3)
    assert info.value.attr == "valeu"


def test_unknown_field_ignored_when_asked() -> None:
    assert validate_task({"name": "job", "valeu": 3}, partial=False, unknown="ignore") == {"name": "job"}


@pytest.mark.parametrize("field", sorted(TASK_READ_ONLY))
def test_read_only_fields_are_ignored_even_in_raise_mode(field: str) -> None:
    # a stock client echoes what it received back in a PUT
    assert validate_task({"name": "job", field: "whatever"}, partial=False) == {"name": "job"}
    assert validate_task({field: "whatever"}, partial=True, unknown="ignore") == {}


def test_first_invalid_field_is_reported_and_nothing_returned() -> None:
    with pytest.raises(ValidationError) as info:
        validate_task({"name": "ok", "value": -1, "status": "bogus"}, partial=False)
    assert info.value.attr in {"value", "status"}


# -- actions ------------------------------------------------------------------------------------------------
GOOD_ACTION = {"trigger": "success", "integration": "email", "config": {"to": "me@example.com"}}

INVALID_ACTIONS = [
    ({"trigger": "", "integration": "email"}, "actions.0.trigger"),
    ({"trigger": S256, "integration": "email"}, "actions.0.trigger"),
    ({"trigger": 5, "integration": "email"}, "actions.0.trigger"),
    ({"trigger": "success", "integration": ""}, "actions.0.integration"),
    ({"trigger": "success", "integration": "x" * 51}, "actions.0.integration"),
    ({"trigger": "success", "integration": None}, "actions.0.integration"),
    ({"integration": "email"}, "actions.0.trigger"),
    ({"trigger": "success"}, "actions.0.integration"),
    ({"trigger": "success", "integration": "email", "config": object()}, "actions.0.config"),
    ({"trigger": "success", "integration": "email", "config": {"x": math.nan}}, "actions.0.config"),
]


@pytest.mark.parametrize(("action", "attr"), INVALID_ACTIONS)
def test_invalid_action_names_its_index_and_field(action: dict[str, Any], attr: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_actions([action])
    assert info.value.attr == attr
    # the index is the action's position in the list
    with pytest.raises(ValidationError) as info:
        validate_actions([GOOD_ACTION, GOOD_ACTION, action])
    assert info.value.attr == attr.replace("actions.0.", "actions.2.")
    # and the same through a task's ``actions`` field
    with pytest.raises(ValidationError) as info:
        validate_task({"name": "job", "actions": [GOOD_ACTION, action]}, partial=False)
    assert info.value.attr == attr.replace("actions.0.", "actions.1.")


@pytest.mark.parametrize("value", [None, {"trigger": "x"}, "success/email", ({"trigger": "a", "integration": "b"},)])
def test_actions_must_be_a_list(value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        validate_actions(value)
    assert info.value.attr == "actions"


def test_action_boundaries_accepted() -> None:
    action = {"trigger": "t", "integration": "i"}
    assert validate_actions([action]) == [action]
    action = {"trigger": S255, "integration": "i" * 50, "config": {"deep": [{"x": 1}]}}
    assert validate_actions([action]) == [action]
    assert validate_actions([]) == []


def test_action_through_task_is_normalised() -> None:
    out = validate_task({"name": "job", "actions": [GOOD_ACTION]}, partial=False)
    assert out == {"name": "job", "actions": [GOOD_ACTION]}


def test_validate_action_alone() -> None:
    with pytest.raises(ValidationError) as info:
        validate_action({"integration": "email"}, partial=False)
    assert info.value.attr == "trigger"
    with pytest.raises(ValidationError) as info:
        validate_action({"integration": "x" * 51}, partial=True)
    assert info.value.attr == "integration"
    # a partial update needs neither field
    assert validate_action({"config": None}, partial=True) == {"config": None}
    assert validate_action({"trigger": "error"}, partial=True) == {"trigger": "error"}


def test_action_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        validate_actions(["success/email"])
    assert info.value.attr is not None
    assert info.value.attr.startswith("actions.0")


def test_action_that_is_not_an_object_names_its_index() -> None:
    with pytest.raises(ValidationError) as info:
        validate_actions([GOOD_ACTION, 7])
    assert info.value.attr == "actions.1"


def test_data_with_non_string_keys_is_rejected() -> None:
    # {1: "a"} would come back from the service as {"1": "a"}; {1: "a", "1": "b"} loses a key
    err = _invalid({"data": {"outer": {1: "a", "1": "b"}}})
    assert err.attr == "data"


# -- invalid text, huge numbers, references, recipients (issue 10) ---------------------------------------------
LONE = "\udfff"


@pytest.mark.parametrize(
    ("fields", "attr"),
    [
        ({"name": LONE}, "name"),
        ({"queue": f"q{LONE}"}, "queue"),
        ({"external_id": LONE}, "external_id"),
        ({"parent": LONE}, "parent"),
        ({"tags": {"env": f"p{LONE}"}}, "tags.env"),
        ({"data": {"note": LONE}}, "data"),
        ({"data": {LONE: 1}}, "data"),
        ({"data": [1, [f"x{LONE}"]]}, "data"),
        # what a str decoded with surrogateescape holds (a file name read from a bad byte)
        ({"name": b"caf\xe9".decode("utf-8", "surrogateescape")}, "name"),
        ({"actions": [{"trigger": "success", "integration": "email", "config": {"x": LONE}}]}, "actions.0.config"),
    ],
)
def test_a_lone_surrogate_is_refused_before_it_is_sent(fields: dict[str, Any], attr: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_task(fields, partial=True)
    assert info.value.attr == attr and "surrogate" in info.value.detail


def test_valid_text_passes_whole_pairs_and_emoji() -> None:
    fields = validate_task({"name": "caf\u00e9 \U0001f600", "data": {"\U0001f600": "\u2603"}}, partial=False)
    assert fields["name"] == "caf\u00e9 \U0001f600"
    assert valid_text("x", "plain") == "plain"


@pytest.mark.parametrize("field", ["start_time", "end_time", "time_to_start"])
@pytest.mark.parametrize("value", [10**400, -(10**400), 2**1024])
def test_a_time_too_large_for_a_float_is_a_validation_error(field: str, value: int) -> None:
    with pytest.raises(ValidationError) as info:
        validate_task({field: value}, partial=True)
    assert info.value.attr == field


@pytest.mark.parametrize("ref", ["a" * 16, "A-b_c" * 4, "x" * 64, "0123456789abcdef"])
def test_valid_refs(ref: str) -> None:
    assert validate_ref(ref) == ref


@pytest.mark.parametrize("ref", ["a" * 15, "x" * 65, "has space in it!", "caf\u00e9-0123456789ab", None, 17, "a/b" * 6])
def test_invalid_refs_name_the_attr(ref: Any) -> None:
    with pytest.raises(ValidationError) as info:
        validate_ref(ref, "parent_ref")
    assert info.value.attr == "parent_ref"


@pytest.mark.parametrize(
    ("to", "addresses"),
    [
        ("ops@example.com", ["ops@example.com"]),
        (["a@example.com", "b@example.org"], ["a@example.com", "b@example.org"]),
        ("a@example.com, B <b@example.org>", ["a@example.com", "b@example.org"]),
        ('"x@evil.example" <ops@example.com>', ["ops@example.com"]),
    ],
)
def test_recipients_are_parsed_as_mail_software_parses_them(to: Any, addresses: list[str]) -> None:
    assert parse_recipients(to) == addresses


@pytest.mark.parametrize(
    "to",
    ["x@evil.example; ops@example.com", "a@b@example.com", "nobody", "", [], None, 7, ["ok@example.com", 3],
     "a@example.com\r\nBcc: x@evil.example"],
)  # fmt: skip
def test_recipients_that_do_not_parse_plainly_are_refused(to: Any) -> None:
    with pytest.raises(ValueError):
        parse_recipients(to)
