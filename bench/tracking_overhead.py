"""What ``@track`` costs a call, and how many requests one tracked call sends.

Run: ``python bench/tracking_overhead.py [CALLS]`` (default 20,000). Uses the embedded store in a temporary
TASKREPORT_HOME. Calls are timed in batches smaller than the flusher's wake-up batch; flushing runs between
batches, outside the timed part, and once more at the end. Prints µs per call (target: at most 15) next to
the untracked call and to the library's own floor (create_task + success), and the requests sent for one
call that finishes within the flush interval (target: 1).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable

CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
BATCH = 200  # below the flusher's BATCH_WAKE (256), so a batch does not wake it for volume


def per_call(call: Callable[[], object], flush: Callable[[], object]) -> float:
    """µs per call, flushing between batches outside the timed part."""
    elapsed = 0.0
    done = 0
    while done < CALLS:
        start = time.perf_counter()
        for _ in range(BATCH):
            call()
        elapsed += time.perf_counter() - start
        done += BATCH
        flush()
    return elapsed / done * 1e6


def main() -> None:
    os.environ.setdefault("TASKREPORT_HOME", tempfile.mkdtemp(prefix="taskreport-bench-"))
    import taskreport

    def noop() -> None:
        pass

    tracked = taskreport.track(name="bench.noop")(noop)
    client = taskreport.get_client()

    def floor() -> None:
        client.create_task("bench.floor", status="processing").success()

    def flush() -> None:
        taskreport.flush(60)

    for warm in (tracked, floor):
        warm()
    flush()
    plain_us = per_call(noop, lambda: None)
    floor_us = per_call(floor, flush)
    tracked_us = per_call(tracked, flush)
    start = time.perf_counter()
    flush()
    final_flush = time.perf_counter() - start

    # one call, then the flush: the create carries the final state, so one request
    before = taskreport.stats()["requests"]
    tracked()
    flush()
    requests = taskreport.stats()["requests"] - before
    record = next(iter(taskreport.list_tasks(name="bench.noop")))

    print(f"{CALLS:,} calls in batches of {BATCH} (Python {sys.version.split()[0]}, embedded SQLite store)")
    print(f"  untracked no-op            {plain_us:8.2f} µs/call")
    print(f"  create_task + success      {floor_us:8.2f} µs/call  (the library's floor)")
    ratio = tracked_us / floor_us
    print(f"  @track no-op               {tracked_us:8.2f} µs/call  (target ≤ 15; {ratio:.2f} x the floor)")
    print(f"  final flush                {final_flush * 1e3:8.1f} ms")
    print(
        f"  requests for one @track call within the flush interval: {requests} (target 1);"
        f" recorded status {record.status.value}"
    )


if __name__ == "__main__":
    main()
