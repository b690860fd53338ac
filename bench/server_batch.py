"""Task updates per second through the batch operation against single PATCHes, same server, same run.

Starts ``taskreport serve`` on a fresh SQLite database (or ``--db postgresql://...``) and sends N updates to
256 tasks over one keep-alive connection, first as N ``PATCH .../tasks/{id}/`` requests, then as
``POST .../tasks/batch/`` requests of ``--size`` operations (updates by reference). Prints updates/s of each,
their ratio, and the server's CPU per update (from /proc, so a busy machine skews it less than wall time).

    python bench/server_batch.py [--updates 3000] [--size 100] [--db URL]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
TASKS = 256


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--db", help="store URL [default: a fresh SQLite file]")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="taskreport-bench-")
    env = {**os.environ, "TASKREPORT_HOME": home, "TASKREPORT_CONFIG": str(Path(home) / "config.toml")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    port = _free_port()
    db = args.db or str(Path(home) / "bench.db")
    command = [sys.executable, "-m", "taskreport", "serve", "--port", str(port), "--log-level", "warning",
               "--no-write-config", "--sweep-interval", "0", "--db", db]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        token = next(line.split()[1] for line in server.stdout if line.strip().startswith("token:"))
        base = f"http://127.0.0.1:{port}/api/local/default/tasks/"
        http = requests.Session()
        http.headers["Authorization"] = f"Token {token}"
        for _ in range(100):
            try:
                http.get(base, timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        refs = [f"bench-task-{i:010d}" for i in range(TASKS)]
        created = http.post(
            f"{base}batch/",
            json={"operations": [{"op": "create", "ref": r, "fields": {"name": r}} for r in refs]},
            timeout=60,
        ).json()["results"]
        ids = [r["id"] for r in created]
        results: dict[str, tuple[float, float]] = {}

        started, cpu = time.perf_counter(), _cpu(server.pid)
        for n in range(args.updates):
            answer = http.patch(f"{base}{ids[n % TASKS]}/", json={"value": n}, timeout=30)
            assert answer.status_code == 200, answer.text
        results["PATCH, one update each"] = (time.perf_counter() - started, _cpu(server.pid) - cpu)

        started, cpu = time.perf_counter(), _cpu(server.pid)
        for first in range(0, args.updates, args.size):
            ops = [
                {"op": "update", "ref": refs[n % TASKS], "fields": {"value": n}}
                for n in range(first, min(first + args.size, args.updates))
            ]
            answer = http.post(f"{base}batch/", json={"operations": ops}, timeout=60)
            assert answer.status_code == 200 and {r["status"] for r in answer.json()["results"]} == {200}
        results[f"batch of {args.size}"] = (time.perf_counter() - started, _cpu(server.pid) - cpu)
    finally:
        server.terminate()
        server.wait(30)
    store = "PostgreSQL" if args.db else "SQLite"
    print(f"taskreport serve on {store}, one keep-alive connection, {args.updates} updates to {TASKS} tasks")
    rates = {}
    for label, (wall, cpu) in results.items():
        rates[label] = args.updates / wall
        per_update = cpu / args.updates * 1e6
        print(f"  {label:<24} {rates[label]:9.0f} updates/s   server CPU {per_update:7.0f} us/update")
    single, batched = rates.values()
    print(f"  batch / single: {batched / single:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
