"""A generator pipeline: every stage is a tracked generator, processing from its first item and done when
exhausted. The stages are children of the job that wires them together.

Run: ``python examples/pipeline.py``, then ``taskreport list``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import taskreport


@taskreport.track(name="read-lines")
def read_lines(count: int) -> Iterator[str]:
    for i in range(count):
        yield f"row {i},{i * i}"


@taskreport.track(name="parse")
def parse(lines: Iterable[str]) -> Iterator[tuple[int, int]]:
    for line in lines:
        left, right = line.removeprefix("row ").split(",")
        yield int(left), int(right)


@taskreport.track(name="first-matches")
def first_matches(pairs: Iterable[tuple[int, int]], limit: int) -> Iterator[int]:
    found = 0
    for key, square in pairs:
        if square % 7 == 0:
            yield key
            found += 1
            if found == limit:
                return


@taskreport.track(name="pipeline-job", tags={"example": "pipeline"})
def job() -> list[int]:
    matches = first_matches(parse(read_lines(1000)), limit=5)
    # first_matches stops after 5 matches: the stages upstream are closed early, and recorded as cancelled
    return list(matches)


def main() -> None:
    print("matches:", job())
    taskreport.flush()
    for name in ("pipeline-job", "read-lines", "parse", "first-matches"):
        record = next(iter(taskreport.list_tasks(name=name)))
        print(f"{name:<14} {record.status.value}")


if __name__ == "__main__":
    main()
