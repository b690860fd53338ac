"""What ``taskreport run`` reads in its command's output: progress in its many spellings, a regex of the user's,
lines split across reads, and the bounded tail kept in the task's data."""

from __future__ import annotations

import re

import pytest

from taskreport.cli._run_output import (
    CARRY,
    WINDOW,
    ProgressReader,
    Tail,
    compile_progress_regex,
    default_reading,
    number,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"copied 12/40 files", (12, 40)),
        (b"Step 3 / 10", (3, 10)),
        (b"[7/9] building", (7, 9)),
        (b"done 45%", (45, 100)),
        (b"45 % complete", (45, 100)),
        (b"12.5% of the way", (12, 100)),
        (b"files:  45%|####5     | 45/100 [00:01<00:01, 42.10it/s]", (45, 100)),
        (b" 30%|###       | 1.20M/4.00M [00:01<00:03, 1.1MB/s]", (1_200_000, 4_000_000)),
        (b"100%|##########| 3.00k/3.00k [00:02<00:00, 1.4kit/s, loss=0.1]", (3000, 3000)),
        (b"1234it [00:01, 987.65it/s]", (1234, None)),
        (b"2.50Mit [00:03, 833kit/s]", (2_500_000, None)),
        (b"1:02:03 elapsed, 17it [1:02:03, 0.00it/s]", (17, None)),
    ],
)
def test_progress_is_read_from_the_usual_spellings(line: bytes, expected: tuple[int, int | None]) -> None:
    assert default_reading(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"started 2024/01/05 at noon",  # a date
        b"GET /api/v1/tasks/ 200",  # a path
        b"ratio 0.5/1.5",  # decimals, not a count
        b"12/5 is not progress",  # more done than there is
        b"3/0",  # nothing to do
        b"load 250%",  # over 100
        b"version 1.2.3",
        b"no numbers here",
        b"",
    ],
)
def test_what_is_not_progress_is_left_alone(line: bytes) -> None:
    assert default_reading(line) is None


def test_scaled_numbers() -> None:
    assert (number(b"42"), number(b"1.5"), number(b"1.20M"), number(b"3k"), number(b"2G")) == (
        42, 1, 1_200_000, 3000, 2_000_000_000,
    )
    assert number(b"x") is None


def test_the_newest_line_wins_within_a_chunk() -> None:
    reader = ProgressReader()
    assert reader.feed(b"1/10\n2/10\nsome log line\n") == (2, 10)
    assert reader.feed(b"nothing here\n") is None


def test_tqdm_redraws_are_read_as_they_come() -> None:
    """tqdm ends a redraw only with the next one's carriage return: the unended line is read at once."""
    reader = ProgressReader()
    assert reader.feed(b"\r  0%|          | 0/50 [00:00<?, ?it/s]") == (0, 50)
    assert reader.feed(b"\r 10%|#         | 5/50 [00:00<00:00, 48.49it/s]") == (5, 50)
    assert reader.feed(b"\r100%|##########| 50/50 [00:01<00:00, 47.38it/s]\n") == (50, 50)


def test_a_line_cut_in_the_middle_of_a_number_waits_for_the_rest() -> None:
    reader = ProgressReader()
    assert reader.feed(b"copied 45/10") is None  # might be 45/100: wait
    assert reader.feed(b"0 files\n") == (45, 100)


def test_a_line_cut_between_reads_is_put_back_together() -> None:
    reader = ProgressReader()
    assert reader.feed(b"step 7 of 9: copied 7/") is None
    assert reader.feed(b"9\n") == (7, 9)


def test_the_last_line_counts_when_the_output_ends_without_a_newline() -> None:
    reader = ProgressReader()
    assert reader.feed(b"3/8") is None
    assert reader.end() == (3, 8)
    assert reader.end() is None


def test_only_the_end_of_a_large_chunk_is_searched() -> None:
    reader = ProgressReader()
    early = b"1/2\n" + b"x" * (WINDOW * 4) + b"\n"
    assert reader.feed(early) is None  # the fraction is long gone: only the newest matters
    assert reader.feed(b"y" * (WINDOW * 4) + b"\n5/6\n") == (5, 6)
    # the bytes kept for the next read are bounded however long a line grows
    reader.feed(b"z" * (CARRY * 10))
    assert len(reader.carry) <= CARRY


def test_a_regex_with_named_groups() -> None:
    read = compile_progress_regex(r"row (?P<value>\d+) of (?P<max>\d+)")
    assert ProgressReader(read).feed(b"row 3 of 12 imported\n") == (3, 12)
    assert ProgressReader(read).feed(b"12/40\n") is None  # the defaults are replaced, not added to


def test_a_regex_with_plain_groups_or_a_percent() -> None:
    assert compile_progress_regex(r"(\d+) done")(b"17 done") == (17, None)
    assert compile_progress_regex(r"(\d+) of (\d+)")(b"2 of 3") == (2, 3)
    percent = compile_progress_regex(r"at (?P<percent>[\d.]+) percent")
    assert percent(b"at 42.5 percent") == (42, 100)
    assert percent(b"at 420 percent") is None


@pytest.mark.parametrize(("pattern", "message"), [(r"(\d+", "missing \\)"), (r"\d+", "no group")])
def test_an_unusable_regex_is_refused(pattern: str, message: str) -> None:
    with pytest.raises((re.error, ValueError), match=message):
        compile_progress_regex(pattern)


def test_the_tail_keeps_the_last_bytes_and_counts_them_all() -> None:
    tail = Tail(10)
    for chunk in (b"abc", b"defghij", b"klm", b"x" * 3):
        tail.feed(chunk)
    assert tail.total == 16
    assert tail.text() == "ghijklmxxx"
    tail.feed(b"0123456789ABCDEF")
    assert tail.text() == "6789ABCDEF"
    assert len(tail.buffer) <= 20


def test_the_tail_stays_bounded_however_much_is_fed() -> None:
    tail = Tail(1000)
    block = bytes(range(256)) * 64
    for _ in range(2000):
        tail.feed(block)
    assert tail.total == 2000 * len(block)
    assert len(tail.buffer) <= 2000


def test_the_tail_reads_as_a_terminal_shows_it() -> None:
    tail = Tail(1000)
    tail.feed(b"\x1b[31merror:\x1b[0m disk full\r\n")
    tail.feed(b"\r 10%|#  | 1/10\r 50%|#####| 5/10\r100%|##########| 10/10\n")
    tail.feed("caf\u00e9 \xff".encode("latin-1") + b"\n")
    assert tail.text().splitlines() == ["error: disk full", "100%|##########| 10/10", "caf\ufffd \ufffd"]


def test_a_character_cut_at_the_start_of_the_tail_is_dropped() -> None:
    tail = Tail(5)
    tail.feed("ééé".encode())  # 6 bytes: the first é is cut in two
    assert tail.text() == "éé"


def test_no_tail() -> None:
    tail = Tail(0)
    tail.feed(b"abc")
    assert (tail.text(), tail.total) == ("", 3)


def test_each_chunk_costs_a_bounded_search_whatever_its_size() -> None:
    """However large a chunk, only its last few KiB are searched: a megabyte costs what a page does."""
    searched: list[int] = []

    def read_line(line: bytes) -> None:
        searched.append(len(line))
        return None

    reader = ProgressReader(read_line)
    for chunk in ((b"log line without progress " * 40 + b"\n") * 1000, b"x" * 5_000_000, b"\n" * 100_000):
        searched.clear()
        reader.feed(chunk)
        assert sum(searched) <= WINDOW + CARRY
