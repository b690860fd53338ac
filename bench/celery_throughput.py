"""Worker throughput on no-op tasks, untracked against tracked, same run, and the requests the server received
per Celery task.

A real ``celery worker`` (prefork, ``--concurrency`` children) on a Redis database of its own takes ``--tasks``
no-op tasks; the publisher sends them all at once. Untracked: reporting is off in the worker and the
publisher. Tracked: both report through the Celery integration, to a real taskreport server on loopback
(SQLite; it runs in this process, on the same cores), or into the embedded store. The modes alternate for
``--rounds`` rounds; each round starts a fresh worker and is timed from the first publication to the last
result. Prints tasks/s per mode, the ratio to untracked (goal: >= 0.9) and the requests the server received
per Celery task (the worker's and the publisher's).

    python bench/celery_throughput.py [--tasks 2000] [--rounds 2] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "integrations"), str(HERE.parent / "tests")]

import _celery_app  # noqa: E402
import redis  # noqa: E402
from _celery_harness import Setup, Worker  # noqa: E402
from _server import serve  # noqa: E402

import taskreport  # noqa: E402
from taskreport.integrations.celery import CeleryIntegration  # noqa: E402


def cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def one_round(setup: Setup, workdir: Path, tasks: int, concurrency: int, mode: str, db: int,
              cpu_used: dict[str, list[float]]) -> float:
    extra = {"TASKREPORT_DISABLED": "1"} if mode == "untracked" else {"TR_CELERY_RECORD_ARGS": "0"}
    if mode == "tracked, embedded":
        setup = dataclasses.replace(setup, report={"TASKREPORT_HOME": str(workdir / "embedded")})
    workers_before, own_before = cpu(resource.RUSAGE_CHILDREN), cpu(resource.RUSAGE_SELF)
    worker = Worker(setup, workdir / f"worker-{time.monotonic_ns()}.log", "-P", "prefork", "-c", str(concurrency),
                    **extra)
    try:
        report = setup.report
        if mode == "tracked, HTTP":
            taskreport.init(report["TASKREPORT_URL"], report["TASKREPORT_TOKEN"], organization=report["TASKREPORT_ORG"],
                            project=report["TASKREPORT_PROJECT"], allow_insecure_http=True,
                            integrations=[CeleryIntegration(auto_track=True)])
        elif mode == "tracked, embedded":
            taskreport.init(home=report["TASKREPORT_HOME"], integrations=[CeleryIntegration(auto_track=True)])
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
    # the worker's CPU (its pool children's included), and this process's (publisher, and server over HTTP)
    cpu_used.setdefault(f"{mode}|worker", []).append((cpu(resource.RUSAGE_CHILDREN) - workers_before) / tasks)
    cpu_used.setdefault(f"{mode}|here", []).append((cpu(resource.RUSAGE_SELF) - own_before) / tasks)
    return tasks / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--url", help="report to this running server (ORG/PROJECT from --org/--project) instead "
                        "of one started here; its requests are counted by a proxy in front of it")
    parser.add_argument("--token")
    parser.add_argument("--org", default="local")
    parser.add_argument("--project", default="default")
    args = parser.parse_args()

    claims = redis.Redis("127.0.0.1", 6379, db=0)
    db = next(n for n in range(1, 16) if claims.set(f"taskreport-tests:db:{n}", "bench", nx=True, ex=1800))
    workdir = Path(tempfile.mkdtemp(prefix="celery-throughput-"))
    org, project = "bench", "bench"
    if args.url:
        from faultproxy import FaultProxy

        proxy = FaultProxy(args.url)
        url, token, org, project = proxy.url, args.token, args.org, args.project

        class Seen:
            @property
            def count(self) -> int:
                return len(proxy.seen)

        counter: Any = Seen()
        stop = proxy.close
    else:
        url, token, counter, stop = serve(str(workdir / "server.db"))
    broker = f"redis://127.0.0.1:6379/{db}"
    setup = Setup(broker=broker, backend=broker, queue="bench-throughput",
                  report={"TASKREPORT_URL": url, "TASKREPORT_TOKEN": token, "TASKREPORT_ORG": org,
                          "TASKREPORT_PROJECT": project, "TASKREPORT_ALLOW_INSECURE_HTTP": "1"}, flush=1.0)
    rates: dict[str, list[float]] = {"untracked": [], "tracked, HTTP": [], "tracked, embedded": []}
    requests: list[float] = []
    cpu_used: dict[str, list[float]] = {}
    try:
        for _ in range(args.rounds):
            for mode in rates:
                before = counter.count
                rates[mode].append(one_round(setup, workdir, args.tasks, args.concurrency, mode, db, cpu_used))
                if mode == "tracked, HTTP":
                    requests.append((counter.count - before) / args.tasks)
    finally:
        stop()
        redis.Redis("127.0.0.1", 6379, db=db).flushdb()
        claims.delete(f"taskreport-tests:db:{db}")
    untracked = statistics.median(rates["untracked"])
    print(f"no-op tasks, {args.tasks} a round, prefork x{args.concurrency}, {args.rounds} rounds per mode")
    for mode, values in rates.items():
        rate = statistics.median(values)
        print(f"{mode:18} {rate:8.0f} tasks/s  {rate / untracked:5.2f}x  "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")
    print("goal: tracked >= 0.9x untracked")
    print("CPU per task (median of rounds; a worker's includes its start and stop):")
    base = statistics.median(cpu_used["untracked|worker"])
    for mode in rates:
        worker_ms = statistics.median(cpu_used[f"{mode}|worker"]) * 1e3
        here_ms = statistics.median(cpu_used[f"{mode}|here"]) * 1e3
        print(f"  {mode:18} worker {worker_ms:6.2f} ms ({worker_ms / (base * 1e3):4.2f}x)   "
              f"publisher{' + server' if mode == 'tracked, HTTP' else ''} {here_ms:6.2f} ms")
    print(f"server requests per Celery task (tracked, HTTP): {statistics.median(requests):.3f}")


if __name__ == "__main__":
    main()
