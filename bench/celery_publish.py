"""``delay()`` latency on Redis: untracked against tracked (the Celery integration), same run, interleaved.

Publishes ``--calls`` tasks per round and mode, over ``--rounds`` rounds, to a Redis database of its own (no
worker: the messages are dropped at the end), timing each ``delay()``:

- ``embedded``: the integration reporting into the embedded store (the record is made at publish);
- ``HTTP``: the integration reporting to a real taskreport server on loopback (the record is made at
  publish when the server knows task references, else by the worker), or to ``--url``;

In each, a task the integration tracks and one it doesn't (``excludes``: only the hook's early return) are
published alternately, so that both see the same moments of a busy machine;
- ``taskbadger 2.6``: its Celery integration reporting to the same server, run in an environment of its own
  (``--taskbadger-python``, or a virtualenv made here with ``pip install taskbadger``; skipped, and said so,
  if that fails).

Prints p50/p99 per mode and the p50 tracking adds (goal: <= 1 ms for ours).

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


def time_pairs(plain: Any, tracked: Any, calls: int, out: dict[str, list[float]], label: str) -> None:
    """``calls`` publications of each, alternating, so that both see the same moments of the machine."""
    clock = time.perf_counter
    for i in range(calls):
        start = clock()
        plain.delay(i, 1)
        middle = clock()
        tracked.delay(i, 1)
        out.setdefault(f"{label}: not tracked", []).append(middle - start)
        out.setdefault(f"{label}: tracked", []).append(clock() - middle)


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
    for _ in range(20):
        plain.delay(0, 1)
        add.delay(0, 1)
    for _ in range(int(rounds)):
        for i in range(int(calls)):
            start = time.perf_counter()
            plain.delay(i, 1)
            middle = time.perf_counter()
            add.delay(i, 1)
            out["untracked"].append(middle - start)
            out["tracked"].append(time.perf_counter() - middle)
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
    parser.add_argument("--url", help="report to this running server instead of one started here")
    parser.add_argument("--token")
    parser.add_argument("--org", default="local")
    parser.add_argument("--project", default="default")
    args = parser.parse_args()

    db, claims = claim_database()
    broker = f"redis://{REDIS}:6379/{db}"
    workdir = Path(tempfile.mkdtemp(prefix="celery-publish-"))
    org, project = "bench", "bench"
    if args.url:
        url, token, org, project, stop = args.url, args.token, args.org, args.project, (lambda: None)
    else:
        url, token, _counter, stop = serve(str(workdir / "server.db"))
    results: dict[str, list[float]] = {}
    notes: list[str] = []
    try:
        app = _celery_app.make_app(broker, "disabled://", "bench-publish")  # no result backend, as taskbadger's
        plain, tracked = app.tasks[_celery_app.PLAIN], app.tasks["tr.add"]
        integration = CeleryIntegration(auto_track=True, excludes=[_celery_app.PLAIN])
        configs = {
            "embedded": lambda: taskreport.init(home=str(workdir / "embedded"), integrations=[integration]),
            "HTTP": lambda: taskreport.init(url, token, organization=org, project=project, allow_insecure_http=True,
                                            home=str(workdir / "http"), integrations=[integration]),
        }
        for _ in range(args.rounds):
            for label, configure in configs.items():
                client = configure()
                if label == "HTTP":
                    client.list_tasks(page_size=1).page()  # as the integration's probe does, once
                time_pairs(plain, tracked, 50, {}, label)  # warm up
                time_pairs(plain, tracked, args.calls, results, label)
                taskreport.flush(30)
        refs = taskreport.get_client().transport.refs
        notes.append(f"the server {'knows' if refs else 'does not know'} task references: over HTTP the record is "
                     f"made {'at publish' if refs else 'by the worker'}")
        taskreport.shutdown(30)

        if not args.no_taskbadger:
            python, how = taskbadger_python(args.taskbadger_python, workdir)
            if python is None:
                notes.append(f"taskbadger: not measured ({how})")
            else:
                run = subprocess.run(
                    [python, "-c", TASKBADGER, url, org, project, token, broker, "bench-tb",
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

    print(f"delay() on Redis, {args.rounds} rounds x {args.calls} calls each, a tracked and a not tracked task "
          "alternating")
    print(f"{'mode':28} {'p50 µs':>9} {'p99 µs':>9} {'added p50 µs':>13}")
    base = 0.0
    for mode, values in results.items():
        p50 = statistics.median(values)
        if "tracked" in mode and "not tracked" not in mode and not mode.startswith("taskbadger untracked"):
            added = f"{(p50 - base) * 1e6:13.1f}"
        else:
            base, added = p50, ""
        print(f"{mode:28} {p50 * 1e6:9.1f} {percentile(values, 0.99) * 1e6:9.1f} {added}")
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
