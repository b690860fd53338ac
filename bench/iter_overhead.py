"""Per-item cost of counting a loop: ``task.iter()`` against tqdm and a bare loop.

Run: ``python bench/iter_overhead.py [N]`` (default 10,000,000 items). Prints ns/item of each loop, the
overhead over the bare loop, and the ratio of ``task.iter()``'s overhead to tqdm's (target: at most 0.6).
Each variant runs a few times and the best run counts, so a noisy machine hurts less.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
REPEATS = 3


def best_of(run: Callable[[], None]) -> float:
    """Best wall time of a few runs, in ns per item."""
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times) / N * 1e9


def main() -> None:
    os.environ.setdefault("TASKREPORT_HOME", tempfile.mkdtemp(prefix="taskreport-bench-"))
    from tqdm import tqdm  # type: ignore[import-untyped]

    import taskreport

    items = range(N)

    def bare() -> None:
        for _ in items:
            pass

    def with_tqdm() -> None:
        with open(os.devnull, "w") as devnull:
            for _ in tqdm(items, file=devnull):
                pass

    def with_task_iter() -> None:
        with taskreport.task("bench.iter") as t:
            for _ in t.iter(items):
                pass

    def with_progress() -> None:
        for _ in taskreport.progress(items, name="bench.progress"):
            pass

    base = best_of(bare)
    figures = {"tqdm": best_of(with_tqdm), "task.iter()": best_of(with_task_iter), "progress()": best_of(with_progress)}
    taskreport.flush()
    check = next(iter(taskreport.list_tasks(name="bench.iter")))
    tqdm_overhead = figures["tqdm"] - base
    print(f"{N:,} items, best of {REPEATS} runs (Python {sys.version.split()[0]})")
    print(f"  {'bare loop':<12} {base:7.1f} ns/item")
    for label, ns in figures.items():
        overhead = ns - base
        ratio = f"  ratio to tqdm's overhead {overhead / tqdm_overhead:.2f}" if label != "tqdm" else ""
        print(f"  {label:<12} {ns:7.1f} ns/item  overhead {overhead:6.1f} ns/item{ratio}")
    exact = check.value == N
    print(f"  recorded value of the last task.iter() run: {check.value:,} of {check.value_max:,} (exact: {exact})")


if __name__ == "__main__":
    main()
