"""Many processes writing one embedded SQLite store at once, on a busy machine: does any writer starve?

Run: ``python bench/embedded_writers.py [--procs 8] [--threads 4] [--seconds 20] [--burners 4]``.

Starts ``--procs`` processes, each with ``--threads`` threads that update their own tasks as fast as they can
(and end one and start another every so often), all reporting to one store in a temporary
``TASKREPORT_HOME``, beside ``--burners`` CPU-bound processes that make no taskreport calls. Each process then
flushes (30 s deadline) and reports its counters. Prints, per process, the writes it delivered per second,
its retries and whether its final flush delivered everything; then the worst process against the best.
Before wave 2, SQLite's sleeping busy handler let one of six such processes starve (5-6 writes in 50 s) and
end with "database is locked". Target: every flush delivers, no retries, worst/best well above zero.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

#: the last commit of wave 1
WAVE1 = "336ea97"


def worker(seconds: float, threads: int) -> None:
    import taskreport

    taskreport.init(flush_interval=0.2)
    stop = time.monotonic() + seconds

    def run(n: int) -> None:
        tasks = [taskreport.Task.create(f"w{os.getpid()}-{n}-{i}", status="processing") for i in range(10)]
        i = 0
        while time.monotonic() < stop:
            t = tasks[i % 10]
            t.update(value=i)
            i += 1
            if i % 5000 == 0:
                t.success()
                tasks[i % 10] = taskreport.Task.create(f"w{os.getpid()}-{n}-{i}", status="processing")
        for t in tasks:
            t.success()

    pool = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    start = time.monotonic()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    delivered = taskreport.flush(30)
    elapsed = time.monotonic() - start
    stats = taskreport.stats()
    print(json.dumps({"pid": os.getpid(), "delivered": delivered, "elapsed": elapsed, **stats}), flush=True)


def burn(seconds: float) -> None:
    stop = time.monotonic() + seconds
    x = 0
    while time.monotonic() < stop:
        x += 1


def run_once(args: argparse.Namespace, pythonpath: str | None) -> tuple[list[dict[str, float]], int]:
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, TASKREPORT_HOME=home, TASKREPORT_CONFIG=os.path.join(home, "config.toml"))
        if pythonpath is not None:
            env["PYTHONPATH"] = pythonpath
        burners = [multiprocessing.get_context("spawn").Process(target=burn, args=(args.seconds + 5,))
                   for _ in range(args.burners)]
        for b in burners:
            b.start()
        procs = [
            subprocess.Popen([sys.executable, __file__, "--worker", "--threads", str(args.threads), "--seconds",
                              str(args.seconds)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=pythonpath or None)
            for _ in range(args.procs)
        ]
        results = []
        locked = 0
        for p in procs:
            out, err = p.communicate(timeout=args.seconds + 120)
            locked += err.count("database is locked")
            results.append(json.loads(out.strip().splitlines()[-1]))
        for b in burners:
            b.terminate()
    return results, locked


def show(label: str, results: list[dict[str, float]], locked: int) -> None:
    print(f"\n{label}")
    print(f"{'pid':>8} {'writes/s':>10} {'retries':>8} {'failed':>7} {'flush ok':>9}")
    rates = []
    for r in results:
        rate = r["requests"] / r["elapsed"]
        rates.append(rate)
        print(f"{r['pid']:>8} {rate:>10.0f} {r['retries']:>8} {r['failed']:>7} {bool(r['delivered'])!s:>9}")
    print(f"worst / best: {min(rates):.0f} / {max(rates):.0f} writes/s = {min(rates) / max(rates):.2f}; "
          f"'database is locked' in stderr: {locked}; every flush delivered: {all(r['delivered'] for r in results)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--burners", type=int, default=4)
    parser.add_argument("--before", default=WAVE1, help="git revision to run the same load against first ('' to skip)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.seconds, args.threads)
        return
    print(f"{args.procs} processes x {args.threads} threads, {args.seconds:.0f} s, {args.burners} CPU burners, "
          "one SQLite store")
    if args.before:
        root = Path(__file__).resolve().parents[1]
        with tempfile.TemporaryDirectory() as tmp:
            archive = subprocess.run(["git", "-C", str(root), "archive", args.before, "taskreport"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            show(f"before ({args.before}):", *run_once(args, tmp))
    show("now:", *run_once(args, None))


if __name__ == "__main__":
    main()
