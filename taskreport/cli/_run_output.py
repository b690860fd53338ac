"""What ``taskreport run`` reads in its command's output: progress (``N/M``, ``N%``, tqdm's bars, or a regex of
the user's) and the bounded tail kept in the task's data.

Both work per chunk of output, at a cost bounded by a chunk's last few KiB, however large the chunk: only the
latest progress matters, and only the last bytes are kept. Memory stays flat however much the command prints.
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: how much of the end of each chunk is searched for progress (its last lines)
WINDOW = 2048
#: of each line, only the end is searched (progress is a short line, or at the end of one)
LINE = 512
#: an unfinished line kept from one chunk to the next, for progress split across two reads
CARRY = 1024

_SCALE = {b"": 1, b"k": 10**3, b"K": 10**3, b"M": 10**6, b"G": 10**9, b"T": 10**12, b"P": 10**15, b"E": 10**18}
_NUM = rb"\d+(?:\.\d+)?[kKMGTPE]?"
#: tqdm's bar with a total: `` 45%|████▌     | 45/100 [00:01<00:01, 42.1it/s]`` (n_fmt and total_fmt may be
#: scaled: ``1.20M/4.00M``)
_TQDM = re.compile(rb"(" + _NUM + rb")/(" + _NUM + rb") \[\d+:\d\d")
#: tqdm without a total: ``45it [00:01, 42.1it/s]``, ``1.20MB [00:01, 1.2MB/s]``
_TQDM_COUNT = re.compile(rb"(?<![\w.])(" + _NUM + rb")[A-Za-z]* \[\d+:\d\d(?::\d\d)?, ")
#: ``12/40``, ``Step 3 / 10``: whole numbers, not part of a date, a path or a decimal
_FRACTION = re.compile(rb"(?<![\w./])(\d+) ?/ ?(\d+)(?![\w/]|\.\d)")
#: ``45%``, ``12.5 %``
_PERCENT = re.compile(rb"(?<![\w.])(\d{1,3}(?:\.\d+)?) ?%")
_SEGMENT = re.compile(rb"[^\r\n]+")
#: the last byte of a line cut in the middle of a number
_OPEN = frozenset(b"0123456789./")

Reading = tuple[int, "int | None"]


def number(text: bytes) -> int | None:
    """A count as tqdm prints it: ``42``, ``1.5``, ``1.20M`` (scaled by 1000)."""
    scale = _SCALE.get(text[-1:], 1) if text[-1:].isalpha() else 1
    digits = text[:-1] if text[-1:].isalpha() else text
    try:
        return int(float(digits) * scale)
    except ValueError:
        return None


def default_reading(segment: bytes) -> Reading | None:
    """Progress in one line of output: ``(value, value_max)`` (``value_max`` None when not given), or None."""
    match = _TQDM.search(segment)
    if match:
        value, total = number(match.group(1)), number(match.group(2))
        if value is not None and total:
            return value, total
    match = _FRACTION.search(segment)
    if match:
        value, total = int(match.group(1)), int(match.group(2))
        if total > 0 and value <= total:
            return value, total
    match = _PERCENT.search(segment)
    if match:
        percent = float(match.group(1))
        if percent <= 100:
            return int(percent), 100
    match = _TQDM_COUNT.search(segment)
    if match:
        value = number(match.group(1))
        if value is not None:
            return value, None
    return None


def compile_progress_regex(pattern: str) -> Callable[[bytes], Reading | None]:
    """A reader for ``--progress-regex``: named groups ``value`` and ``max`` (or ``percent``), else group 1 is
    the value and group 2, if there is one, the maximum. Raises ``re.error`` (or ValueError) if unusable."""
    compiled = re.compile(pattern.encode())
    names = compiled.groupindex
    if compiled.groups == 0:
        raise ValueError("it has no group: put the number in ( ), e.g. 'step (\\d+) of (\\d+)'")
    if "percent" in names:

        def percent(segment: bytes) -> Reading | None:
            match = compiled.search(segment)
            found = number(match.group("percent") or b"") if match else None
            return None if found is None or found > 100 else (found, 100)

        return percent
    value_group: int | str = "value" if "value" in names else 1
    max_group: int | str | None = "max" if "max" in names else (2 if compiled.groups >= 2 and not names else None)

    def custom(segment: bytes) -> Reading | None:
        match = compiled.search(segment)
        if not match:
            return None
        value = number(match.group(value_group) or b"")
        if value is None:
            return None
        total = number(match.group(max_group) or b"") if max_group is not None else None
        return value, total or None

    return custom


class ProgressReader:
    """Finds the latest progress in a stream of chunks. Only the last lines of each chunk are looked at (the
    last :data:`WINDOW` bytes). A line not yet ended is read too, unless it stops in the middle of a number,
    and kept (at most :data:`CARRY` bytes) to be read again with what follows it."""

    __slots__ = ("carry", "read_line")

    def __init__(self, read_line: Callable[[bytes], Reading | None] = default_reading) -> None:
        self.read_line = read_line
        self.carry = b""

    def feed(self, chunk: bytes) -> Reading | None:
        window = (self.carry + chunk)[-WINDOW:] if len(chunk) < WINDOW else chunk[-WINDOW:]
        cut = max(window.rfind(b"\n"), window.rfind(b"\r"))
        rest = window[cut + 1 :]
        self.carry = rest[-CARRY:]
        if rest and rest[-1] not in _OPEN:
            # a line not ended yet (tqdm ends each redraw with the next one's \r): the newest, unless it
            # stops in the middle of a number
            found = self.read_line(rest[-LINE:])
            if found is not None:
                return found
        return self._latest(window[:cut]) if cut > 0 else None

    def end(self) -> Reading | None:
        """The output ended: its last line counts even if it was never ended."""
        carry, self.carry = self.carry, b""
        return self._latest(carry)

    def _latest(self, text: bytes) -> Reading | None:
        read_line = self.read_line
        for match in reversed(list(_SEGMENT.finditer(text))):
            found = read_line(match.group()[-LINE:])
            if found is not None:
                return found
        return None


class Tail:
    """The last ``limit`` bytes of the output, and how many bytes there were in all."""

    __slots__ = ("buffer", "limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        limit = self.limit
        if len(chunk) >= limit:
            self.buffer[:] = chunk[len(chunk) - limit :] if limit else b""
            return
        self.buffer += chunk
        if len(self.buffer) > 2 * limit:
            del self.buffer[: len(self.buffer) - limit]

    def text(self) -> str:
        """The tail as a terminal would show it: the last ``limit`` bytes, decoded (bad bytes replaced),
        carriage-return redraws collapsed to their last state, escape sequences removed."""
        raw = bytes(self.buffer[-self.limit :]) if self.limit else b""
        if len(raw) < self.total:
            raw = raw.lstrip(bytes(range(0x80, 0xC0)))  # a character cut in two at the start
        text = _ESCAPE.sub("", raw.decode("utf-8", "replace"))
        lines = []
        for line in text.split("\n"):
            if "\r" in line:
                body = line.rstrip("\r")
                line = body[body.rfind("\r") + 1 :]
            lines.append(line)
        return "\n".join(lines)


_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
