"""How fresh the server's copy of busy tasks stays while the application's threads are busy, before and now.

Run: ``python bench/flusher_freshness.py [--seconds 8] [--interval 1.0] [--threads 1,4,16] [--tasks 1000]
[--embedded]``.

A real ``taskreport serve`` on SQLite runs in its own process. The application, in another process, keeps
1,000 tasks and runs N CPU-bound threads; each thread does a slice of pure-Python work, then writes the
current time (ms) as the value of the next of its tasks, over and over. A third process samples the
server's database every 0.25 s: for each task, how old the state the server holds is (now minus the time
written into it). After the run the application updates all 1,000 tasks once more and times its
``flush()``. The same load runs against the code of wave 1 (``--before``) and against this checkout.

With ``--embedded`` there is no server: the application writes the embedded store (SQLite) directly, and the
sampler reads that file. ``--embedded --tasks 10000`` is issue 9's "10,000 live tasks reach the store every
interval".

Targets (issue 9): p99 age ≤ 2 flush intervals with 1, 4 and 16 busy threads; the final flush of 1,000
changed tasks ≤ 1 s; with the embedded store and 10,000 live tasks, each reaches the store every interval.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serve import ROOT, WAVE1, exported, serve


def app(seconds: float, interval: float, threads: int, run_id: str, count: int) -> None:
    import taskreport

    taskreport.init(flush_interval=interval, max_pending=max(10_000, 2 * count))
    tasks = [taskreport.Task.create(f"fresh-{run_id}-{i}", status="processing", value=int(time.time() * 1000))
             for i in range(count)]
    assert taskreport.flush(60)
    print("ready", flush=True)
    sys.stdin.readline()
    stop = time.monotonic() + seconds
    per = count // threads

    def busy(n: int) -> None:
        mine = tasks[n * per : (n + 1) * per] if n < threads - 1 else tasks[n * per :]
        i = 0
        while time.monotonic() < stop:
            sum(range(3000))  # the application's own work: pure Python, holding the GIL
            mine[i % len(mine)].update(value=int(time.time() * 1000))
            i += 1

    pool = [threading.Thread(target=busy, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    now = int(time.time() * 1000)
    for t in tasks:
        t.update(value=now)
    start = time.monotonic()
    delivered = taskreport.flush(30)
    final = time.monotonic() - start
    print(json.dumps({"final_flush": final, "delivered": delivered}), flush=True)
    taskreport.shutdown()


def sample(db: Path, seconds: float, warmup: float, run_id: str) -> list[float]:
    """Ages (seconds) of the server's copy of each task, sampled every 0.25 s after ``warmup``."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    ages: list[float] = []
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        time.sleep(0.25)
        if time.monotonic() - start < warmup:
            continue
        now = time.time() * 1000
        rows = conn.execute("SELECT value FROM tasks WHERE name LIKE ?", (f"fresh-{run_id}-%",)).fetchall()
        ages += [(now - value) / 1000 for (value,) in rows if value]
    conn.close()
    return ages


def run(served_env: dict[str, str], db: Path | None, pythonpath: str | None, args: argparse.Namespace,
        threads: int) -> dict[str, float]:
    env = {**os.environ, **served_env}
    env["TASKREPORT_HOME"] = home = tempfile.mkdtemp(prefix="bench-home-")
    env["TASKREPORT_CONFIG"] = os.path.join(home, "config.toml")
    if db is None:  # the embedded store: the application writes it, the sampler reads it
        db = Path(home) / "taskreport.db"
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    run_id = os.urandom(4).hex()
    proc = subprocess.Popen([sys.executable, __file__, "--app", "--seconds", str(args.seconds), "--interval",
                             str(args.interval), "--threads", str(threads), "--run-id", run_id, "--tasks",
                             str(args.tasks)], env=env,
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=pythonpath or ROOT)
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.stdin.write("go\n")
    proc.stdin.flush()
    ages = sample(db, args.seconds, warmup=2 * args.interval, run_id=run_id)
    result = json.loads(proc.stdout.readline())
    proc.wait(60)
    ages.sort()
    return {"p50": statistics.median(ages), "p99": ages[int(len(ages) * 0.99)], "final_flush": result["final_flush"],
            "delivered": float(result["delivered"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--threads", default="1,4,16")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--embedded", action="store_true", help="write the embedded store instead of a server")
    parser.add_argument("--before", default=WAVE1, help="git revision to compare with ('' to skip)")
    parser.add_argument("--app", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.app:
        app(args.seconds, args.interval, int(args.threads), args.run_id, args.tasks)
        return
    counts = [int(n) for n in args.threads.split(",")]
    where = "the embedded store" if args.embedded else "a server"
    print(f"{args.tasks:,} tasks updated by N busy threads for {args.seconds:.0f} s, flush_interval {args.interval} s,"
          f" {where}; age of the stored copy (p50 / p99), final flush of all tasks")
    with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as stack:
        served_env: dict[str, str] = {}
        db: Path | None = None
        if not args.embedded:
            served = stack.enter_context(serve(Path(work)))
            served_env, db = served.env(), served.db
        old = stack.enter_context(exported(args.before or "HEAD"))
        sides = ([f"before ({args.before})"] if args.before else []) + ["now"]
        for n in counts:
            for label in sides:
                path = str(old) if label.startswith("before") else None
                r = run(served_env, db, path, args, n)
                ok = "ok" if r["p99"] <= 2 * args.interval and r["final_flush"] <= 1 else "MISSED"
                print(f"  {n:>2} busy threads, {label:<18} age p50 {r['p50']:6.2f} s  p99 {r['p99']:6.2f} s"
                      f"  final flush {r['final_flush']:5.2f} s  delivered {bool(r['delivered'])}  [{ok}]")


if __name__ == "__main__":
    main()
