"""``delay()`` latency on Redis: untracked against tracked (the Celery integration), same run, interleaved.

Publishes ``--calls`` tasks per round and mode, over ``--rounds`` rounds, to a Redis database of its own (no
worker: the messages are dropped at the end), timing each ``delay()``:

- ``untracked``: taskreport without the Celery integration;
- ``tracked, embedded``: the integration reporting into the embedded store (the record is made at publish);
- ``tracked, HTTP``: the integration reporting to a real taskreport server on loopback (the record is made at
  publish when the server knows task references, else by the worker);
- ``taskbadger 2.6``: its Celery integration reporting to the same server, run in an environment of its own
  (``--taskbadger-python``, or a virtualenv made here with ``pip install taskbadger``; skipped, and said so,
  if that fails).

Prints p50/p99 per mode and the p50 each adds over untracked (goal: <= 1 ms for ours).

    python bench/celery_publish.py [--calls 2000] [--rounds 5] [--taskbadger-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "integrations")]

import _celery_app  # noqa: E402
from _server import serve  # noqa: E402

import taskreport  # noqa: E402
from taskreport.integrations.celery import CeleryIntegration  # noqa: E402

REDIS = "127.0.0.1"


def claim_database() -> tuple[int, Any]:
    import redis

    claims = redis.Redis(REDIS, 6379, db=0)
    for number in range(1, 16):
        if claims.set(f"taskreport-tests:db:{number}", f"bench-{os.getpid()}", nx=True, ex=900):
            return number, claims
    raise SystemExit("every Redis database is claimed")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_calls(task: Any, calls: int) -> list[float]:
    out = []
    clock = time.perf_counter
    for i in range(calls):
        start = clock()
        task.delay(i, 1)
        out.append(clock() - start)
    return out


TASKBADGER = textwrap.dedent("""
    import json, sys, time
    from celery import Celery
    import taskbadger
    from taskbadger.systems.celery import CelerySystemIntegration
    url, org, project, token, broker, queue, calls, rounds = sys.argv[1:9]
    app = Celery("tb", broker=broker, set_as_current=True)
    app.conf.task_default_queue = queue
    @app.task(name="tb.add")
    def add(x, y):
        return x + y
    @app.task(name="tb.plain")
    def plain(x, y):
        return x + y
    from taskbadger.sdk import _init  # init() always reports to taskbadger.net; _init takes the host
    _init(url, org, project, token, systems=[CelerySystemIntegration(excludes=["tb.plain"])])
    out = {"untracked": [], "tracked": []}
    for _ in range(int(rounds)):
        for mode, task in (("untracked", plain), ("tracked", add)):
            for _ in range(20):
                task.delay(0, 1)
            for i in range(int(calls)):
                start = time.perf_counter()
                task.delay(i, 1)
                out[mode].append(time.perf_counter() - start)
    print(json.dumps(out))
""")


def taskbadger_python(given: str | None, workdir: Path) -> tuple[str | None, str]:
    if given:
        return given, "given"
    venv = workdir / "taskbadger-venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        return None, f"could not make a virtualenv: {made.stderr.strip()[-200:]}"
    python = str(venv / "bin" / "python")
    packages = ["taskbadger==2.6.*", "celery>=5.3", "redis", "packaging"]
    pip = subprocess.run([python, "-m", "pip", "install", "-q", *packages], capture_output=True, text=True)
    if pip.returncode != 0:
        return None, f"pip install taskbadger failed: {pip.stderr.strip()[-300:]}"
    return python, "installed here"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--taskbadger-python", default=None)
    parser.add_argument("--no-taskbadger", action="store_true")
    args = parser.parse_args()

    db, claims = claim_database()
    broker = f"redis://{REDIS}:6379/{db}"
    workdir = Path(tempfile.mkdtemp(prefix="celery-publish-"))
    url, token, counter, stop = serve(str(workdir / "server.db"))
    results: dict[str, list[float]] = {}
    notes: list[str] = []
    try:
        app = _celery_app.make_app(broker, broker, "bench-publish")
        task = app.tasks["tr.add"]
        modes = {
            "untracked": lambda: taskreport.init(home=str(workdir / "untracked")),
            "tracked, embedded": lambda: taskreport.init(home=str(workdir / "embedded"),
                                                         integrations=[CeleryIntegration(auto_track=True)]),
            "tracked, HTTP": lambda: taskreport.init(url, token, organization="bench", project="bench",
                                                     allow_insecure_http=True, home=str(workdir / "http"),
                                                     integrations=[CeleryIntegration(auto_track=True)]),
        }
        for _ in range(args.rounds):
            for mode, configure in modes.items():
                client = configure()
                if mode == "tracked, HTTP":
                    list(client.list_tasks(page_size=1).page()[0])  # as the integration's probe would
                time_calls(task, 50)  # warm up
                results.setdefault(mode, []).extend(time_calls(task, args.calls))
                taskreport.flush(30)
        refs = taskreport.get_client().transport.refs
        notes.append(f"the server {'knows' if refs else 'does not know'} task references: over HTTP the record is "
                     f"made {'at publish' if refs else 'by the worker'}")
        before = counter.count
        taskreport.shutdown(30)
        notes.append(f"server requests for the HTTP rounds' records: {before} (before the last flush)")

        if not args.no_taskbadger:
            python, how = taskbadger_python(args.taskbadger_python, workdir)
            if python is None:
                notes.append(f"taskbadger: not measured ({how})")
            else:
                run = subprocess.run(
                    [python, "-c", TASKBADGER, url, "bench", "bench", token, broker, "bench-tb",
                     str(min(args.calls, 500)), str(args.rounds)],
                    capture_output=True, text=True, timeout=1200,
                )
                if run.returncode != 0:
                    notes.append(f"taskbadger: failed ({run.stderr.strip()[-300:]})")
                else:
                    figures = json.loads(run.stdout.strip().splitlines()[-1])
                    results["taskbadger untracked"] = figures["untracked"]
                    results["taskbadger 2.6 tracked"] = figures["tracked"]
                    notes.append(f"taskbadger: {how}, {min(args.calls, 500)} calls a round")
    finally:
        stop()
        import redis

        redis.Redis(REDIS, 6379, db=db).flushdb()
        claims.delete(f"taskreport-tests:db:{db}")

    base = statistics.median(results["untracked"])
    tb_base = statistics.median(results.get("taskbadger untracked", [base]))
    print(f"delay() on Redis, {args.rounds} rounds x {args.calls} calls, interleaved")
    print(f"{'mode':28} {'p50 µs':>9} {'p99 µs':>9} {'added p50 µs':>13}")
    for mode, values in results.items():
        p50 = statistics.median(values)
        ref = tb_base if mode.startswith("taskbadger") else base
        print(f"{mode:28} {p50 * 1e6:9.1f} {percentile(values, 0.99) * 1e6:9.1f} {(p50 - ref) * 1e6:13.1f}")
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
