"""A loop with ``progress()``: like tqdm, but the progress goes to the task service.

Run: ``python examples/progress_loop.py``, then ``taskreport list``.
"""

from __future__ import annotations

import time

import taskreport


def main() -> None:
    total = 0
    for number in taskreport.progress(range(50), name="checksum", tags={"example": "progress"}):
        time.sleep(0.01)  # some work per item
        total += number

    # an iterable without len(): the total is learnt when it is exhausted
    lines = (f"line {i}" for i in range(1_000))
    with taskreport.progress(lines, name="scan", tags={"example": "progress"}) as scan:
        longest = max(len(line) for line in scan)

    taskreport.flush()
    print(f"sum={total} longest={longest}")
    for record in taskreport.list_tasks(tag={"example": "progress"}):
        print(f"{record.name:<10} {record.status.value:<8} {record.value}/{record.value_max}")


if __name__ == "__main__":
    main()
