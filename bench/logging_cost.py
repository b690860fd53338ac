"""What the logging integration adds to a logging call, inside a task and outside one, in one run.

Run: ``python bench/logging_cost.py [--calls N] [--rounds R]``. One process, the embedded store in a temporary
directory, the flusher running as in production (it delivers the task's log tail every second meanwhile). The
call is ``log.info("processed item %d of %s", i, "batch")`` on a logger whose handler formats each record
(time, level, logger, message) and writes it to ``os.devnull``. Measured as the calling thread's CPU time
(``time.thread_time_ns``: what the caller pays, steady on a machine busy with other work), in alternated
rounds (median kept):

- ``stdlib``: the call with the integration's hook not installed at all;
- ``off``: the hook installed, the process's client made without the integration;
- ``no task``: the integration enabled, no task current (records get the ``taskreport_task*`` fields);
- ``in task``: the integration enabled, inside a task: each record also goes on the task's tail (50 kept).

Target (issue 13): ``in task`` - ``no task`` <= 2 us per call.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable


def per_call(log: logging.Logger, n: int) -> float:
    """CPU time of this thread per call, in ns: what the caller pays, whatever else the machine runs."""
    info = log.info
    start = time.thread_time_ns()
    for i in range(n):
        info("processed item %d of %s", i, "batch")
    return (time.thread_time_ns() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50_000, help="logging calls per measurement")
    parser.add_argument("--rounds", type=int, default=15, help="alternated rounds (the median is kept)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        os.environ["TASKREPORT_HOME"] = home
        os.environ["TASKREPORT_CONFIG"] = os.path.join(home, "config.toml")
        import taskreport
        from taskreport.integrations import logging as tr_logging

        devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
        handler = logging.StreamHandler(devnull)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        log = logging.getLogger("bench.app")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False

        integration = tr_logging.LoggingIntegration()
        with_integration = taskreport.init(integrations=[integration])
        original = tr_logging._original  # the stdlib's Logger.callHandlers, kept by the hook
        hooked = logging.Logger.callHandlers
        without = taskreport._client.Client(with_integration.config)  # same settings, no integration

        def stdlib() -> float:
            logging.Logger.callHandlers = original  # type: ignore[method-assign]
            try:
                return per_call(log, args.calls)
            finally:
                logging.Logger.callHandlers = hooked  # type: ignore[method-assign]

        def off() -> float:
            previous = taskreport._client.swap_client(without)
            try:
                return per_call(log, args.calls)
            finally:
                taskreport._client.swap_client(previous)

        def no_task() -> float:
            return per_call(log, args.calls)

        def in_task() -> float:
            with taskreport.task("bench-logging"):
                return per_call(log, args.calls)

        cases: dict[str, Callable[[], float]] = {"stdlib": stdlib, "off": off, "no task": no_task,
                                                 "in task": in_task}
        per_call(log, args.calls // 10)  # warm up
        results: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, case in cases.items():
                results[name].append(case())
        delivered = taskreport.flush(30)
        last = next(iter(taskreport.list_tasks(name="bench-logging")))
        tail = len(last.data["logs"]) if isinstance(last.data, dict) else 0
        taskreport.shutdown()
        without.close(0)
        devnull.close()

    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"{args.calls:,} calls x {args.rounds} alternated rounds; median per call (min-max over rounds):")
    for name, value in median.items():
        low, high = min(results[name]), max(results[name])
        print(f"  {name:8} {value / 1000:6.2f} us   ({low / 1000:.2f}-{high / 1000:.2f})")
    added = (median["in task"] - median["no task"]) / 1000
    best = (min(results["in task"]) - min(results["no task"])) / 1000
    print(f"in task - no task: {added:+.2f} us per call (target <= 2 us); best rounds: {best:+.2f} us")
    print(f"no task - off:     {(median['no task'] - median['off']) / 1000:+.2f} us per call (fields on every record)")
    print(f"off - stdlib:      {(median['off'] - median['stdlib']) / 1000:+.2f} us per call (the hook, not enabled)")
    print(f"delivered: {delivered}; records on the task: {tail} (the tail kept)")


if __name__ == "__main__":
    main()
