"""``progress()`` takes tqdm's argument names where they mean the same (``desc``, ``total``, ``disable``,
``initial``, ``unit``), and a bad value is refused the same way for every argument: a ValidationError naming
the argument, at the call, whether reporting is on or off."""

from __future__ import annotations

import math
from typing import Any

import pytest
from recorded import only, records

import taskreport
from taskreport import progress


def test_desc_is_the_name() -> None:
    for _ in progress(range(3), desc="resize images"):
        pass
    record = only("resize images")
    assert (record.value, record.value_max, record.status.value) == (3, 3, "success")


def test_tqdm_positional_order_is_iterable_desc_total() -> None:
    for _ in progress(iter(range(4)), "positional", 10):
        pass
    record = only("positional")
    assert (record.value, record.value_max) == (4, 10)


def test_name_and_desc_together_are_refused() -> None:
    with pytest.raises(TypeError, match="both"):
        progress(range(3), name="a", desc="b")


def test_initial_starts_the_count_and_total_counts_it_in() -> None:
    """As in tqdm: a resumed download of 100 parts with 40 done shows 40/100, then 100/100."""
    for _ in progress(range(60), desc="resume", total=100, initial=40):
        pass
    record = only("resume")
    assert (record.value, record.value_max, record.status.value) == (100, 100, "success")


def test_initial_is_there_before_the_first_item() -> None:
    loop = progress(range(5), desc="before", total=10, initial=5)
    assert loop.task.value == 5
    for _ in loop:
        pass
    assert (only("before").value, only("before").value_max) == (10, 10)


def test_float_totals_as_tqdm_takes_them() -> None:
    for _ in progress(range(2), desc="float-total", total=1e3):
        pass
    assert only("float-total").value_max == 1000
    for _ in progress(iter(range(2)), desc="unknown-total", total=math.inf):
        pass
    assert only("unknown-total").value_max == 2  # unknown until the end, as with no total


def test_unit_is_kept_in_the_data() -> None:
    for _ in progress(range(2), desc="bytes", unit="B", data={"source": "s3"}):
        pass
    assert only("bytes").data == {"source": "s3", "unit": "B"}


def test_disable_iterates_without_reporting() -> None:
    assert list(progress(range(5), desc="off", disable=True)) == list(range(5))
    with progress(desc="off-by-hand", disable=True) as loop:
        loop.increment()
    assert list(progress(range(2), desc="none-means-on", disable=None)) == [0, 1]
    assert [r.name for r in records()] == ["none-means-on"]


BAD: list[tuple[dict[str, Any], str]] = [
    ({"desc": 5}, "desc"),
    ({"desc": ""}, "desc"),
    ({"name": 5}, "name"),
    ({"name": "x" * 256}, "name"),
    ({"total": "ten"}, "total"),
    ({"total": -1}, "total"),
    ({"total": 2.5}, "total"),
    ({"total": True}, "total"),
    ({"total": math.nan}, "total"),
    ({"initial": -3}, "initial"),
    ({"initial": "0"}, "initial"),
    ({"unit": 7}, "unit"),
    ({"unit": ""}, "unit"),
    ({"disable": "yes"}, "disable"),
    ({"heartbeat": -1}, "heartbeat"),
    ({"heartbeat": "soon"}, "heartbeat"),
    ({"tags": {"k": 1}}, "tags.k"),
    ({"value_max": -5}, "value_max"),
    ({"unit": "B", "data": [1, 2]}, "unit"),
]


@pytest.mark.parametrize(("arguments", "attr"), BAD, ids=[f"{a}" for a, _ in BAD])
@pytest.mark.parametrize("reporting", ["on", "off"])
def test_a_bad_value_is_refused_at_the_call_naming_the_argument(
    arguments: dict[str, Any], attr: str, reporting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if reporting == "off":
        monkeypatch.setenv("TASKREPORT_DISABLED", "1")
        taskreport.shutdown(0)
    with pytest.raises(taskreport.ValidationError) as caught:
        progress(range(3), **arguments)
    assert caught.value.attr == attr
    if reporting == "on":
        assert records() == []  # nothing was created
