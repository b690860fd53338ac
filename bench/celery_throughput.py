"""Worker throughput on no-op tasks, untracked against tracked, same run, and the requests the server received
per Celery task.

A real ``celery worker`` (prefork, ``--concurrency`` children) on a Redis database of its own takes ``--tasks``
no-op tasks; the publisher sends them all at once. Untracked: reporting is off in the worker and the
publisher. Tracked: both report to a real taskreport server on loopback (SQLite) through the Celery
integration. The modes alternate for ``--rounds`` rounds; each round starts a fresh worker, and is timed from
the first publication to the last result. Prints tasks/s per mode, the ratio (goal: >= 0.9) and the requests
the server received per Celery task (the worker's and the publisher's).

    python bench/celery_throughput.py [--tasks 2000] [--rounds 2] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "integrations")]

import _celery_app  # noqa: E402
import redis  # noqa: E402
from _celery_harness import Setup, Worker  # noqa: E402
from _server import serve  # noqa: E402

import taskreport  # noqa: E402
from taskreport.integrations.celery import CeleryIntegration  # noqa: E402


def one_round(setup: Setup, workdir: Path, tasks: int, concurrency: int, tracked: bool, db: int) -> float:
    extra = {"TR_CELERY_RECORD_ARGS": "0"} if tracked else {"TASKREPORT_DISABLED": "1"}
    worker = Worker(setup, workdir / f"worker-{time.monotonic_ns()}.log", "-P", "prefork", "-c", str(concurrency),
                    **extra)
    try:
        if tracked:
            report = setup.report
            taskreport.init(report["TASKREPORT_URL"], report["TASKREPORT_TOKEN"], organization="bench",
                            project="bench", allow_insecure_http=True,
                            integrations=[CeleryIntegration(auto_track=True)])
        else:
            taskreport.init(disabled=True)
        app = _celery_app.make_app(setup.broker, setup.backend, setup.queue)
        noop = app.tasks["tr.noop"]
        results = redis.Redis("127.0.0.1", 6379, db=db)
        results.flushdb()
        start = time.perf_counter()
        for _ in range(tasks):
            noop.delay()
        while len(results.keys("celery-task-meta-*")) < tasks:
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        taskreport.shutdown(30)
    finally:
        worker.stop()  # the pool children deliver what they have before they exit
    return tasks / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    claims = redis.Redis("127.0.0.1", 6379, db=0)
    db = next(n for n in range(1, 16) if claims.set(f"taskreport-tests:db:{n}", "bench", nx=True, ex=1800))
    workdir = Path(tempfile.mkdtemp(prefix="celery-throughput-"))
    url, token, counter, stop = serve(str(workdir / "server.db"))
    broker = f"redis://127.0.0.1:6379/{db}"
    setup = Setup(broker=broker, backend=broker, queue="bench-throughput",
                  report={"TASKREPORT_URL": url, "TASKREPORT_TOKEN": token, "TASKREPORT_ORG": "bench",
                          "TASKREPORT_PROJECT": "bench", "TASKREPORT_ALLOW_INSECURE_HTTP": "1"}, flush=1.0)
    rates: dict[str, list[float]] = {"untracked": [], "tracked": []}
    requests: list[float] = []
    try:
        for _ in range(args.rounds):
            for mode in ("untracked", "tracked"):
                before = counter.count
                rates[mode].append(one_round(setup, workdir, args.tasks, args.concurrency, mode == "tracked", db))
                if mode == "tracked":
                    requests.append((counter.count - before) / args.tasks)
    finally:
        stop()
        redis.Redis("127.0.0.1", 6379, db=db).flushdb()
        claims.delete(f"taskreport-tests:db:{db}")
    untracked, tracked = statistics.median(rates["untracked"]), statistics.median(rates["tracked"])
    print(f"no-op tasks, {args.tasks} a round, prefork x{args.concurrency}, {args.rounds} rounds per mode")
    for mode, values in rates.items():
        print(f"{mode:10} {statistics.median(values):8.0f} tasks/s  (rounds: {', '.join(f'{v:.0f}' for v in values)})")
    print(f"tracked/untracked: {tracked / untracked:.2f}x (goal >= 0.9)")
    print(f"server requests per Celery task (tracked): {statistics.median(requests):.3f}")


if __name__ == "__main__":
    main()
