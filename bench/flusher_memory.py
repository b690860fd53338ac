"""RSS growth of the reporting process: 1,000,000 updates to one task (target < 2 MiB) and 10,000 open
tasks with pending changes (target < 50 MiB). Memory must follow the number of tasks, not of updates.
Embedded store, with a long flush interval; the flusher still wakes early once 256 tasks are pending, so
some are delivered while measured: what is measured is the reporting process's own memory."""

from __future__ import annotations

import gc
import os
import tempfile

import taskreport


def rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        os.environ["TASKREPORT_HOME"] = home
        os.environ["TASKREPORT_CONFIG"] = os.path.join(home, "config.toml")
        taskreport.init(flush_interval=3600, max_pending=20_000)
        warm = taskreport.Task.create("warm-up")
        for i in range(1000):
            warm.update(value=i)
        assert taskreport.flush(10)

        gc.collect()
        before = rss()
        task = taskreport.Task.create("one task")
        for i in range(1_000_000):
            task.update(value=i)
        gc.collect()
        one = rss() - before
        verdict = "OK" if one < 2 * 2**20 else "OVER"
        print(f"1,000,000 updates to one task: RSS +{mib(one)}  (target < 2 MiB) -> {verdict}")
        assert taskreport.flush(30)

        gc.collect()
        before = rss()
        tasks = [taskreport.Task.create(f"open {i}", value_max=100, tags={"batch": "b1"}) for i in range(10_000)]
        for n, t in enumerate(tasks):
            t.processing()
            t.update(value=n % 100, data={"step": n})
        gc.collect()
        many = rss() - before
        print(f"10,000 open tasks with pending changes: RSS +{mib(many)}  (target < 50 MiB) "
              f"-> {'OK' if many < 50 * 2**20 else 'OVER'}; per task {many / 10_000:,.0f} bytes")
        stats = taskreport.stats()
        print(f"pending tasks {stats['pending']:,}, dropped {stats['dropped']}")
        assert taskreport.flush(120)
        taskreport.shutdown()


if __name__ == "__main__":
    main()
