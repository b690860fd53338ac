"""How long ``task.update(value=i)`` takes on the caller's thread, against a bare baseline.

Prints ns/call for task.update, task.increment and, as a baseline measured in the same run, a plain method
that merges the same kwargs into a dict under a lock (the least any thread-safe update can do). The Task
Badger SDK measured 0.8 ms per update inside its Session and 21-26 ms outside it (synchronous HTTP).
Target: ≤ 500 ns/call.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

import taskreport

N = 1_000_000


class Baseline:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: dict[str, int] = {}

    def update(self, **fields: int) -> None:
        with self.lock:
            self.state.update(fields)


def per_call(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter_ns()
        fn(n)
        best = min(best, (time.perf_counter_ns() - start) / n)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        os.environ["TASKREPORT_HOME"] = home
        os.environ["TASKREPORT_CONFIG"] = os.path.join(home, "config.toml")
        taskreport.init()
        task = taskreport.Task.create("bench-hot-path", value_max=N)

        def updates(n: int) -> None:
            update = task.update
            for i in range(n):
                update(value=i)

        def increments(n: int) -> None:
            inc = task.increment
            for _ in range(n):
                inc()

        base = Baseline()

        def baseline(n: int) -> None:
            update = base.update
            for i in range(n):
                update(value=i)

        def loop(n: int) -> None:
            for _i in range(n):
                pass

        empty = per_call(loop, N)
        b = per_call(baseline, N) - empty
        u = per_call(updates, N) - empty
        inc = per_call(increments, N) - empty
        task.success()
        delivered = taskreport.flush(10)
        print(f"task.update(value=i): {u:7.1f} ns/call  (target <= 500)")
        print(f"task.increment():     {inc:7.1f} ns/call")
        print(f"baseline lock+merge:  {b:7.1f} ns/call  -> update is {u / b:.2f}x the baseline")
        print(f"Task Badger SDK (measured by the issue): 800,000 ns inside its Session -> {800_000 / u:,.0f}x faster")
        print(f"final state delivered: {delivered}; stats: {taskreport.stats()}")
        taskreport.shutdown()


if __name__ == "__main__":
    main()
