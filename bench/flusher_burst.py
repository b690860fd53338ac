"""Bursts of ``@track``ed calls against a real server: delivered before exit, and end-to-end throughput.

Run: ``python bench/flusher_burst.py [--burst 15000] [--calls 1000]``.

A real ``taskreport serve`` on SQLite runs in its own process; each measurement runs in a fresh process.

1. **Burst**: a script makes ``--burst`` calls of a ``@track``ed no-op and exits, with the default exit
   timeout (5 s). Printed: the calls' time, the time from the last call until the process ended, how many
   tasks the server holds, and how many were spooled instead. Before (wave 1) and now.
2. **Throughput**: ``--calls`` tracked calls, then ``flush()``: calls delivered per second end to end, the
   caller's cost per call, and the delivery's cost per call. Before and now, and the Task Badger SDK 2.6 (if
   installed; it comes with the ``dev`` extra) pointed at the same server, inside its ``Session``.

Targets (issue 9): the whole burst delivered within the default exit timeout, none spooled; throughput
≥ 10x Task Badger's.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serve import ROOT, WAVE1, Served, exported, serve

BURST = """
    import json, os, sys, time
    import taskreport

    @taskreport.track(name=sys.argv[1])
    def noop():
        pass

    start = time.monotonic()
    for _ in range(int(sys.argv[2])):
        noop()
    print(json.dumps({"calls": time.monotonic() - start, "ended_calls_at": time.time()}), flush=True)
"""

THROUGHPUT = """
    import json, sys, time
    import taskreport

    @taskreport.track(name=sys.argv[1])
    def noop():
        pass

    noop(); assert taskreport.flush(30)   # warm: connection, thread
    n = int(sys.argv[2])
    start = time.perf_counter()
    for _ in range(n):
        noop()
    calls = time.perf_counter() - start
    assert taskreport.flush(120)
    total = time.perf_counter() - start
    print(json.dumps({"calls": calls, "total": total}), flush=True)
"""

TASKBADGER = """
    import json, os, sys, time
    import taskbadger
    from taskbadger.sdk import _init

    # init() always talks to taskbadger.net; the SDK's own config path takes a host, as its CLI does
    _init(os.environ["TASKBADGER_HOST"], token=sys.argv[3])

    @taskbadger.track(name=sys.argv[1])
    def noop():
        pass

    noop()
    n = int(sys.argv[2])
    with taskbadger.Session():
        start = time.perf_counter()
        for _ in range(n):
            noop()
        total = time.perf_counter() - start
    print(json.dumps({"calls": total, "total": total}), flush=True)
"""


def count(served: Served, name: str) -> int:
    """Tasks named ``name`` on the server (paging through them)."""
    url: str | None = f"{served.url}/api/{served.organization}/{served.project}/tasks/?name={name}&page_size=1000"
    total = 0
    while url:
        request = urllib.request.Request(url, headers={"Authorization": f"Token {served.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
        total += len(body["results"])
        url = body["next"]
    return total


def script(body: str, served: Served, pythonpath: str | None, *args: str,
           extra_env: dict[str, str] | None = None) -> tuple[dict[str, float], float, Path]:
    home = Path(tempfile.mkdtemp(prefix="bench-home-"))
    env = {**os.environ, **served.env(), "TASKREPORT_HOME": str(home), **(extra_env or {})}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(body), *args], env=env, capture_output=True,
                          text=True, timeout=600, cwd=pythonpath or ROOT)
    ended = time.time()
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1]), ended, home


def spooled(home: Path) -> int:
    n = 0
    for path in (home / "spool").glob("*.json*"):
        body = json.loads(path.read_text())
        n += len(body.get("records") or body.get("entries") or [])
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=15_000)
    parser.add_argument("--calls", type=int, default=1_000)
    parser.add_argument("--before", default=WAVE1, help="git revision to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work, serve(Path(work)) as served, exported(args.before) as old:
        print(f"1. A burst of {args.burst:,} @track calls, then the process exits (default exit timeout 5 s)")
        for label, path in ((f"before ({args.before})", str(old)), ("now", None)):
            name = f"burst-{os.urandom(3).hex()}"
            result, ended, home = script(BURST, served, path, name, str(args.burst))
            after_calls = ended - result["ended_calls_at"]
            on_server, kept = count(served, name), spooled(home)
            print(f"   {label:<18} calls {result['calls']:6.2f} s, exit {after_calls:5.2f} s after the last call;"
                  f" on the server {on_server:>6,}, spooled {kept:>6,}")
        print(f"\n2. {args.calls:,} @track calls, then flush(): end-to-end throughput")
        rates = {}
        for label, path in ((f"before ({args.before})", str(old)), ("now", None)):
            name = f"tp-{os.urandom(3).hex()}"
            result, _, _ = script(THROUGHPUT, served, path, name, str(args.calls))
            assert count(served, name) == args.calls + 1
            rates[label] = args.calls / result["total"]
            caller = result["calls"] / args.calls * 1e6
            delivery = (result["total"] - result["calls"]) / args.calls * 1e6
            print(f"   {label:<18} {rates[label]:8,.0f} calls delivered/s; caller {caller:6.1f} µs/call, delivery "
                  f"{delivery:7.1f} µs/call")
        try:
            import taskbadger  # noqa: F401
        except ImportError:
            print("   Task Badger SDK: not installed (pip install 'taskbadger==2.6.0'); no comparison")
            return
        key = base64.b64encode(f"{served.organization}/{served.project}/{served.token}".encode()).decode()
        name = f"tb-{os.urandom(3).hex()}"
        result, _, _ = script(TASKBADGER, served, None, name, str(args.calls), key,
                              extra_env={"TASKBADGER_HOST": served.url})
        assert count(served, name) == args.calls + 1
        tb = args.calls / result["total"]
        print(f"   {'Task Badger 2.6':<18} {tb:8,.0f} calls delivered/s, in its Session (synchronous: the caller"
              " waits for delivery)")
        print(f"   now / Task Badger: {rates['now'] / tb:.1f}x (target >= 10x); "
              f"before / Task Badger: {rates[f'before ({args.before})'] / tb:.1f}x")


if __name__ == "__main__":
    main()
