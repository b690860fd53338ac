"""The dashboard's three targets, in one run against a real ``taskreport serve`` (its own process):

1. the task list of a project holding 100,000 tasks: the server's time per page (its ``Server-Timing``), for
   each filter the page offers and deep in the paging (target: <= 100 ms);
2. a live update: from the PATCH's answer to the event on an open stream (target: <= 1 s);
3. what 200 open dashboards cost the PATCH path: PATCH/s and the server's CPU time per PATCH with no stream open
   and with 200 streams open on the project being written (all of them sent every change), in rounds of both
   (every other round the other way round), as the median of the rounds' ratios
   (target: <= 10 % more cost).

    python bench/dashboard_live.py [--tasks 100000] [--streams 200] [--duration 5] [--pg postgresql://...]

The load is wrk (1 thread, 32 connections) when installed, else a Python load generator; the streams are held
by a separate process that reads and counts every event.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_throughput import WRK_SCRIPT, free_port, run_python, run_wrk

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "bench", "bench-password-1"
ORG, PROJECT = "bench", "bench"
STATUSES = ["success"] * 80 + ["error"] * 10 + ["processing"] * 5 + ["pending"] * 3 + ["cancelled"] * 2


def seed(store_url: str, count: int) -> str:
    """``count`` tasks in bench/bench (a tenth top-level, the rest their children), a user and a token."""
    from taskreport._store import open_store
    from taskreport._store._rows import new_task_id

    rng = random.Random(7)
    store = open_store(store_url)
    now = time.time()
    with store.transaction() as tx:
        scope = tx.ensure_project(ORG, PROJECT)
        tx.create_user(USER, PASSWORD, ORG)
        token = str(tx.create_token(ORG, name="bench"))
        first = int(tx.cur.scalar("SELECT COALESCE(MAX(id), 0) FROM tasks")) + 1
        ids = [new_task_id() for _ in range(count)]
        rows, tags = [], []
        for i in range(count):
            status = rng.choice(STATUSES)
            created = now - 30 * 86400 + i * (30 * 86400 / count)
            started = created + rng.random() * 5
            ended = started + rng.random() * 600 if status in ("success", "error", "cancelled") else None
            name = "needle" if i % 20000 == 3 else f"job-{i % 200}"
            env = "prod" if i % 2 else "dev"
            customer = str(i % 1000)
            parent = None if i % 10 == 0 else ids[i - i % 10]
            rows.append((first + i, ids[i], scope.project_id, name, status, rng.randrange(100), 100,
                         json.dumps({"env": env, "customer": customer}), parent, created, ended or started,
                         started if status != "pending" else None, ended, 1))  # fmt: skip
            tags += [(first + i, "env", env), (first + i, "customer", customer)]
        tx.cur.executemany(
            "INSERT INTO tasks (id, public_id, project_id, name, status, value, value_max, tags, parent, created,"
            " updated, start_time, end_time, born) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        tx.cur.executemany("INSERT INTO task_tags (task_id, tag_key, tag_value) VALUES (?, ?, ?)", tags)
        if store.dialect == "postgresql":
            tx.cur.execute("SELECT setval(pg_get_serial_sequence('tasks', 'id'), (SELECT MAX(id) FROM tasks))")
    if store.dialect == "postgresql":
        with store.db.connection().cursor() as cur:
            cur.execute("ANALYZE")
    else:
        with store.transaction() as tx:
            tx.cur.execute("ANALYZE")
    store.close()
    return token


def start(store_url: str, workdir: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKREPORT_")}
    env.update(TASKREPORT_HOME=str(workdir / "home"), TASKREPORT_CONFIG=str(workdir / "config.toml"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskreport", "serve", "--db", store_url, "--port", str(port), "--sweep-interval",
         "0", "--no-write-config", "--login-rate-limit", "off", "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/ping/", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start: " + (proc.stderr.read() if proc.stderr else ""))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sign_in(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    answer = client.post("/login", data={"csrf": token.group(1), "username": USER, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    return client


def list_times(client: httpx.Client, repeat: int) -> list[tuple[str, float, float]]:
    base = f"/p/{ORG}/{PROJECT}/"
    deep = client.get(base)
    queries = {"no filter": ""}
    for _ in range(40):  # 40 pages down: the cursor of page 41
        found = re.search(r'rel="next" href="[^"?]*\?([^"]+)"', deep.text)
        assert found
        deep = client.get(base + "?" + found.group(1).replace("&amp;", "&"))
    queries["page 41 (cursor)"] = found.group(1).replace("&amp;", "&")
    queries.update({
        "status=error (10%)": "status=error", "status=active (8%)": "status=active",
        "status=finished (92%, 3 statuses)": "status=finished", "status=pending (3%)": "status=pending",
        "name contains job-17 (~5%)": "name=job-17", "name contains needle (5 tasks)": "name=needle",
        "name contains nothing-matches": "name=zzzz", "tag=env:prod (50%)": "tag=env:prod",
        "tag=customer:42 (0.1%)": "tag=customer:42", "status=error + tag=env:prod": "status=error&tag=env:prod",
        "status=active + name contains job-1": "status=active&name=job-1",
    })  # fmt: skip
    out = []
    for label, query in queries.items():
        times = []
        for _ in range(repeat):
            answer = client.get(base + ("?" + query if query else ""))
            assert answer.status_code == 200, (label, answer.status_code)
            times.append(float(answer.headers["server-timing"].split("dur=")[1]))
        out.append((label, statistics.median(times), max(times)))
    return out


def live_latency(client: httpx.Client, url: str, token: str, task_id: str, samples: int) -> list[float]:
    arrivals: dict[int, float] = {}
    opened = threading.Event()
    stop = threading.Event()

    def read() -> None:
        with client.stream("GET", f"/p/{ORG}/{PROJECT}/events", timeout=httpx.Timeout(10, read=60)) as response:
            for line in response.iter_lines():
                if line.startswith("event: hello"):
                    opened.set()
                if line.startswith("data:") and task_id in line:
                    for row in json.loads(line[5:]):
                        if row[0] == task_id:  # [id, status, value, ...]
                            arrivals.setdefault(row[2], time.perf_counter())
                if stop.is_set():
                    return

    threading.Thread(target=read, daemon=True).start()
    assert opened.wait(10)
    headers = {"Authorization": f"Token {token}"}
    sent: dict[int, float] = {}
    with httpx.Client(timeout=30) as api:
        for n in range(samples):
            value = 1000 + n
            answer = api.patch(f"{url}/api/{ORG}/{PROJECT}/tasks/{task_id}/", json={"value": value}, headers=headers)
            sent[value] = time.perf_counter()
            assert answer.status_code == 200
            deadline = time.monotonic() + 5
            while value not in arrivals and time.monotonic() < deadline:
                time.sleep(0.002)
            # a pause of any length: the PATCHes fall anywhere between two polls, not just after one
            time.sleep(random.random())
    stop.set()
    return [arrivals[v] - sent[v] for v in sent if v in arrivals] + [float("inf")] * (samples - len(arrivals))


STREAMS = r"""
import asyncio, sys, time
host, port, cookie, count, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
events = [0]
async def one():
    reader, writer = await asyncio.open_connection(host, port)
    head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
    writer.write(head.encode())
    await writer.drain()
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return
        events[0] += chunk.count(b"event: tasks")
async def main():
    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await asyncio.sleep(1.0)
    print("open", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(events[0], flush=True)
asyncio.run(main())
"""


def patch_load(url: str, token: str, task_ids: list[str], duration: float, pid: int) -> dict[str, float]:
    before = cpu_seconds(pid)
    port = int(url.rsplit(":", 1)[1])
    prefix = f"/api/{ORG}/{PROJECT}/tasks/"
    import shutil

    if shutil.which("wrk"):
        env = {"BENCH_TASKS": ",".join(task_ids), "BENCH_PREFIX": prefix, "BENCH_TOKEN": token}
        result = run_wrk(url, WRK_SCRIPT, env, 32, duration)
    else:
        counter = [0]

        def make() -> bytes:
            counter[0] += 1
            body = json.dumps({"value": counter[0]}).encode()
            task = task_ids[counter[0] % len(task_ids)]
            return (f"PATCH {prefix}{task}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        result = run_python(port, make, 32, duration)
    cpu = cpu_seconds(pid) - before
    return {"rate": result["rate"], "requests": result["requests"], "cpu_us": cpu / max(1, result["requests"]) * 1e6,
            "non2xx": result["non2xx"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of 0 and N streams (every other one N first)")
    parser.add_argument("--patch-tasks", type=int, default=64, help="tasks the PATCH load rotates over")
    parser.add_argument("--pg", help="a PostgreSQL URL (its schema is used as it is) instead of a new SQLite file")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="dashboard-bench-"))
    store_url = args.pg or str(workdir / "bench.db")
    started = time.monotonic()
    token = seed(store_url, args.tasks)
    kind = "PostgreSQL" if args.pg else "SQLite"
    print(f"seeded {args.tasks:,} tasks in {time.monotonic() - started:.1f} s ({kind})")
    proc, url = start(store_url, workdir)
    try:
        client = sign_in(url)
        headers = {"Authorization": f"Token {token}"}
        print(f"\n1. list page, {args.tasks:,} tasks in the project: server time (Server-Timing), median / max of 15")
        worst = 0.0
        for label, median, top in list_times(client, 15):
            worst = max(worst, median)
            print(f"   {label:40s} {median:7.1f} ms  {top:7.1f} ms")
        print(f"   slowest median: {worst:.1f} ms (target <= 100 ms)")

        live = [httpx.post(f"{url}/api/{ORG}/{PROJECT}/tasks/", json={"name": f"load-{i}", "status": "processing"},
                           headers=headers).json()["id"] for i in range(args.patch_tasks)]  # fmt: skip
        latencies = sorted(live_latency(client, url, token, live[0], 60))
        q = statistics.quantiles(latencies, n=20)
        print(f"\n2. live update, PATCH answered -> event on an open stream ({len(latencies)} updates):"
              f" p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {q[18] * 1000:.0f} ms,"
              f" max {latencies[-1] * 1000:.0f} ms (target <= 1000 ms)")  # fmt: skip

        cookie = "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)
        port = url.rsplit(":", 1)[1]
        print(f"\n3. PATCH load ({args.duration:g} s each, {len(live)} tasks of the watched project), alternated:")
        patch_load(url, token, live, 1.0, proc.pid)  # warm-up, not counted
        results: dict[int, list[dict[str, float]]] = {0: [], args.streams: []}
        for round_ in range(args.rounds):
            # every other round in the other order, so that a machine speeding up or slowing down during the
            # run favours neither side; each round's pair is compared on its own
            for streams in (0, args.streams) if round_ % 2 == 0 else (args.streams, 0):
                holder = None
                if streams:
                    holder = subprocess.Popen([sys.executable, "-c", STREAMS, "127.0.0.1", port, cookie, str(streams),
                                               f"/p/{ORG}/{PROJECT}/events"], stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, text=True)  # fmt: skip
                    assert holder.stdout and holder.stdin and holder.stdout.readline().strip() == "open"
                result = patch_load(url, token, live, args.duration, proc.pid)
                events = 0
                if holder is not None:
                    assert holder.stdin and holder.stdout
                    holder.stdin.write("\n")
                    holder.stdin.flush()
                    events = int(holder.stdout.readline())
                    holder.kill()
                    holder.wait()
                results[streams].append(result)
                print(f"   {streams:4d} streams: {result['rate']:7.0f} PATCH/s, server CPU {result['cpu_us']:6.0f} us"
                      f" per PATCH" + (f", {events:,} events read by the streams" if streams else "")
                      + (f", {result['non2xx']} non-2xx" if result["non2xx"] else ""))  # fmt: skip
                time.sleep(0.5)
        pairs = list(zip(results[0], results[args.streams], strict=True))
        cpu = statistics.median(n["cpu_us"] / z["cpu_us"] for z, n in pairs)
        rate = statistics.median(n["rate"] / z["rate"] for z, n in pairs)
        each = ", ".join(f"{(n['cpu_us'] / z['cpu_us'] - 1) * 100:+.0f}%" for z, n in pairs)
        print(f"   with {args.streams} streams, median of the {len(pairs)} rounds' ratios: PATCH/s x{rate:.2f},"
              f" server CPU per PATCH {(cpu - 1) * 100:+.1f}% (target <= +10%; rounds: {each})")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
