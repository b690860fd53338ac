"""Progress bars for ``taskreport watch``: rows of text, and a frame redrawn in place on a terminal.

A small renderer rather than a library: the frame is a few lines rewritten with three ANSI sequences (cursor
up, erase line, erase below), which every terminal since the VT100 understands. It keeps ``taskreport`` free
of a drawing dependency and its start-up fast.
"""

from __future__ import annotations

import dataclasses
import os
import time
import unicodedata
from collections import deque
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from .._models import TaskRecord

#: seconds of samples the rate is measured over
RATE_WINDOW = 15.0

_COLORS = {
    "pending": "2",  # dim
    "pre_processing": "36",
    "processing": "36",  # cyan
    "post_processing": "36",
    "success": "32",  # green
    "error": "31",  # red
    "cancelled": "35",  # magenta
    "stale": "33",  # yellow
    "gone": "31",
}


def cells(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide East Asian characters take two, combining marks none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns (with an ellipsis when cut), padded to exactly ``width``."""
    if width <= 0:
        return ""
    if cells(text) <= width:
        return text + " " * (width - cells(text))
    out, used = [], 0
    for char in text:
        size = 0 if unicodedata.combining(char) else (2 if unicodedata.east_asian_width(char) in ("W", "F") else 1)
        if used + size > width - 1:
            break
        out.append(char)
        used += size
    return "".join(out) + "…" + " " * (width - 1 - used)


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def rate_text(rate: float | None) -> str:
    if rate is None:
        return "-"
    if rate >= 100:
        return f"{rate:.0f}/s"
    if rate >= 1:
        return f"{rate:.1f}/s"
    if rate * 60 >= 1:
        return f"{rate * 60:.1f}/min"
    if rate > 0:
        return f"{rate * 3600:.1f}/h"
    return "0/s"


@dataclasses.dataclass
class Tracked:
    """A task being watched: its latest record, and the values seen over time (for the rate)."""

    record: TaskRecord
    children: list[TaskRecord] = dataclasses.field(default_factory=list)
    more_children: bool = False
    gone: bool = False
    samples: deque[tuple[float, int]] = dataclasses.field(default_factory=deque)

    def __post_init__(self) -> None:
        self.see(self.record)

    def see(self, record: TaskRecord, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.record = record
        if record.value is not None:
            self.samples.append((now, record.value))
            while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
                self.samples.popleft()

    @property
    def status(self) -> str:
        return "gone" if self.gone else self.record.status.value

    @property
    def ended(self) -> bool:
        return self.gone or self.record.status.is_terminal

    @property
    def succeeded(self) -> bool:
        return not self.gone and self.record.status.value == "success"


def measured_rate(record: TaskRecord, samples: deque[tuple[float, int]] | None = None) -> float | None:
    """Items per second: over the last samples while it runs; before there are two, or once it has ended,
    the average since it started (by the service's own clock)."""
    if record.value is None:
        return None
    if not record.status.is_terminal and samples and len(samples) >= 2:
        (t0, v0), (t1, v1) = samples[0], samples[-1]
        if t1 - t0 >= 0.5:
            return max(0.0, (v1 - v0) / (t1 - t0))
    start = record.start_time
    end = record.end_time if record.status.is_terminal else record.updated
    if start is None or end is None:
        return None
    elapsed = (end - start).total_seconds()
    # a running task's first second says little about its pace
    enough = elapsed > 0 if record.status.is_terminal else elapsed >= 1.0
    return record.value / elapsed if enough else None


def eta_text(record: TaskRecord, rate: float | None) -> str:
    if record.status.is_terminal:
        if record.start_time is not None and record.end_time is not None:
            return "took " + duration((record.end_time - record.start_time).total_seconds())
        return ""
    if record.value is None or rate is None or rate <= 0 or record.value >= record.value_max:
        return "ETA -"
    return "ETA " + duration((record.value_max - record.value) / rate)


def percent(record: TaskRecord) -> int | None:
    if record.value_percent is not None:
        return record.value_percent
    if record.value is None or not record.value_max:
        return None
    return min(100, record.value * 100 // record.value_max)


@dataclasses.dataclass
class Row:
    """One line of the display, in columns."""

    name: str
    status: str
    fraction: float | None
    percent: str
    counts: str
    rate: str
    eta: str


def row(record: TaskRecord, status: str, samples: deque[tuple[float, int]] | None, prefix: str = "") -> Row:
    pct = percent(record)
    rate = measured_rate(record, samples)
    fraction = None if pct is None else min(1.0, (record.value or 0) / record.value_max if record.value_max else 0)
    counts = "-" if record.value is None else f"{record.value}/{record.value_max}"
    return Row(
        name=prefix + record.name,
        status=status,
        fraction=fraction,
        percent="" if pct is None else f"{pct}%",
        counts=counts,
        rate=rate_text(rate) if record.value is not None else "",
        eta=eta_text(record, rate),
    )


def rows_of(tracked: list[Tracked]) -> list[Row]:
    out = []
    for item in tracked:
        out.append(row(item.record, item.status, item.samples))
        for i, child in enumerate(item.children):
            last = i == len(item.children) - 1 and not item.more_children
            out.append(row(child, child.status.value, None, "└ " if last else "├ "))
        if item.more_children:
            out.append(Row("└ …", "", None, "", "", "", ""))
    return out


class Style:
    """ANSI colours, or none (``NO_COLOR``, ``TERM=dumb``, or not a terminal)."""

    def __init__(self, color: bool, unicode: bool = True) -> None:
        self.color = color
        self.full, self.empty = ("█", "░") if unicode else ("#", "-")

    def paint(self, text: str, code: str | None) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and code and text.strip() else text


def layout(rows: list[Row], width: int, style: Style) -> list[str]:
    """The rows as lines of at most ``width - 1`` columns (a full line would wrap on some terminals)."""
    width = max(10, width - 1)
    pct_w, counts_w = 4, max((len(r.counts) for r in rows), default=1)
    rate_w = max((len(r.rate) for r in rows), default=1)
    eta_w = max((len(r.eta) for r in rows), default=1)
    status_w = max((len(r.status) for r in rows), default=1)
    # what the name and the bar share: the rest, less the separators
    room = width - (1 + pct_w + 1 + counts_w + 2 + rate_w + 2 + eta_w + 2 + status_w)
    name_w = min(max((cells(r.name) for r in rows), default=4), 30)
    if room - name_w - 1 < 10:
        name_w = max(8, room - 1 - 10)
    bar_w = min(40, room - name_w - 1)
    lines = []
    for r in rows:
        parts = [fit(r.name, name_w)]
        code = _COLORS.get(r.status)
        if bar_w >= 8:
            if r.fraction is None:
                bar = " " * bar_w
            else:
                done = int(r.fraction * bar_w)
                bar = style.paint(style.full * done, code) + style.empty * (bar_w - done)
            parts.append(bar)
        parts.append(r.percent.rjust(pct_w))
        parts.append(r.counts.rjust(counts_w) + " ")
        parts.append(r.rate.rjust(rate_w) + " ")
        parts.append(r.eta.ljust(eta_w) + " ")
        parts.append(style.paint(r.status, code))
        line = " ".join(parts)
        if bar_w < 8:
            # too narrow for the columns: cut the line (colours only wrap the status, which is last)
            plain = " ".join([fit(r.name, name_w), r.percent.rjust(pct_w), r.counts, r.rate, r.eta, r.status])
            line = fit(plain, width).rstrip()
        lines.append(line.rstrip())
    return lines


class Screen:
    """Redraws a frame of lines in place on a terminal."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.drawn: list[str] = []
        self.drawn_width = 0
        self.started = False

    def size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(self.stream.fileno())
            return size.columns or 80, size.lines or 24
        except (OSError, ValueError, AttributeError):
            return 80, 24

    def draw(self, lines: list[str]) -> None:
        width, _ = self.size()
        out = []
        if not self.started:
            out.append("\x1b[?25l")  # hide the cursor while drawing
            self.started = True
        if self.drawn:
            # lines drawn at a greater width wrapped when the terminal narrowed: move up past all of them
            up = len(self.drawn)
            if width < self.drawn_width:
                up = sum(max(1, -(-cells(_strip(line)) // width)) for line in self.drawn)
            out.append(f"\r\x1b[{up}A")
        for line in lines:
            out.append("\x1b[2K" + line + "\n")
        out.append("\x1b[J")
        self.stream.write("".join(out))
        self.stream.flush()
        self.drawn, self.drawn_width = lines, width

    def close(self) -> None:
        if self.started:
            self.stream.write("\x1b[?25h")
            self.stream.flush()
            self.started = False


def _strip(line: str) -> str:
    """A line without its colour sequences."""
    out, i = [], 0
    while i < len(line):
        if line[i] == "\x1b":
            end = line.find("m", i)
            i = end + 1 if end >= 0 else len(line)
            continue
        out.append(line[i])
        i += 1
    return "".join(out)
