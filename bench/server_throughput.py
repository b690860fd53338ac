"""Persisted PATCH/s of a real ``taskreport serve`` (SQLite or PostgreSQL, 1..N server processes), against a
no-op endpoint of the same stack.

Starts ``taskreport serve`` on a fresh database on a free loopback port (``--store postgresql``: a new
database on the PostgreSQL at 127.0.0.1:5432, dropped afterwards; ``--workers 1,2,4``: one run per count of
server processes), then drives it with 32 keep-alive connections (wrk if installed, else a Python HTTP/1.1
load generator) for a bounded time:

1. ``GET /api/ping/``: the no-op, through the same uvicorn, ASGI app, routing and negotiation;
2. ``PATCH /api/{org}/{project}/tasks/{id}/`` with ``{"value": n}``, rotating over many tasks.

Each is measured ``--rounds`` times, alternating (a machine's speed drifts with its neighbours' load: a no-op
measured a minute before the PATCHes can be a fifth faster or slower). Prints the median round's requests/s
and p50/p99 latency, the median of the rounds' PATCH/no-op ratios (target: >= 0.5 with one process), how
much of the machine's cores the server, PostgreSQL and the load generator used during the PATCHes (Linux),
and with several process counts the gain of each over one process. A PATCH is answered only
after its transaction committed; to check that, the run records the highest value acknowledged for each
task and, after stopping the server, reads the database: every task must hold at least that value.

    python bench/server_throughput.py [--store sqlite|postgresql] [--workers 1,2,4] [--duration 5]
        [--rounds 3] [--connections 32] [--tasks 256] [--db-pool-size N] [--python] [--cpu-per-process SHARE]

``--cpu-per-process 0.25`` puts each server process in a cgroup of its own capped at a quarter of a core:
on a machine with fewer cores than processes, it shows how PATCH/s grows with processes that each have
the same share of a core (as each would have a core of its own on a bigger machine), PostgreSQL and the
load generator keeping the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

WRK_SCRIPT = r"""
local tasks = {}
local counter = tonumber(os.getenv("BENCH_START") or "0")
local ntasks = 0
for id in string.gmatch(os.getenv("BENCH_TASKS") or "", "[^,]+") do
  ntasks = ntasks + 1
  tasks[ntasks] = id
end
local prefix = os.getenv("BENCH_PREFIX")
local headers = {["Authorization"] = "Token " .. os.getenv("BENCH_TOKEN"), ["Content-Type"] = "application/json"}
acked = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

request = function()
  counter = counter + 1
  local task = tasks[(counter % ntasks) + 1]
  return wrk.format("PATCH", prefix .. task .. "/", headers, '{"value": ' .. counter .. '}')
end

response = function(status, hdrs, body)
  if status == 200 then
    local id = string.match(body, '"id":"([^"]+)"')
    local value = tonumber(string.match(body, '"value":(%d+)'))
    if id and value and (acked[id] == nil or acked[id] < value) then
      acked[id] = value
    end
  end
end

done = function(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    local t = thread:get("acked")
    for id, value in pairs(t) do
      if merged[id] == nil or merged[id] < value then merged[id] = value end
    end
  end
  local parts = {}
  for id, value in pairs(merged) do table.insert(parts, string.format('"%s":%d', id, value)) end
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50_us":%d,"p99_us":%d,"acked":{%s}}\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99), table.concat(parts, ",")))
end
"""

NOOP_SCRIPT = r"""
done = function(summary, latency, requests)
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50_us":%d,"p99_us":%d,"acked":{}}\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(workdir: Path, port: int, db: str, workers: int,
                 extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen[str], str]:  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKREPORT_")}
    env.update(TASKREPORT_HOME=str(workdir / "home"), TASKREPORT_CONFIG=str(workdir / "config.toml"))
    script = Path(sys.executable).parent / "taskreport"
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from taskreport.cli import main; main()"]
    command += [
        "serve",
        "--db",
        db,
        "--workers",
        str(workers),
        "--port",
        str(port),
        "--no-write-config",
        "--log-level",
        "warning",
        "--sweep-interval",
        "0",
        *extra,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    token = ""
    deadline = time.monotonic() + 30
    while not token and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.strip().startswith("token:"):
            token = line.split()[1]
    if not token:
        process.kill()
        raise SystemExit("taskreport serve printed no token")
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/ping/", timeout=1):
                return process, token
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("taskreport serve did not answer")


def api(method: str, url: str, token: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Token {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


# -- load generators ---------------------------------------------------------------------------------
def run_wrk(url: str, script: str, env: dict[str, str], connections: int, duration: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    try:
        out = subprocess.run(
            ["wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, round(duration))}s", "-s", fh.name,
             "--timeout", "10s", url],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=duration + 60,
            check=True,
        ).stdout
    finally:
        os.unlink(fh.name)
    line = next(line for line in out.splitlines() if line.startswith("BENCH "))
    result: dict[str, Any] = json.loads(line[len("BENCH ") :])
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


async def _python_connection(
    host: str, port: int, make: Any, until: float, latencies: list[float], acked: dict[str, int], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while time.monotonic() < until:
            payload = make()
            started = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(status)
            elif body.startswith(b'{"id"'):
                row = json.loads(body)
                if row["value"] > acked.get(row["id"], -1):
                    acked[row["id"]] = row["value"]
    finally:
        writer.close()


def run_python(port: int, make: Any, connections: int, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    acked: dict[str, int] = {}
    errors: list[int] = []

    async def main() -> float:
        started = time.monotonic()
        until = started + duration
        await asyncio.gather(
            *(
                _python_connection("127.0.0.1", port, make, until, latencies, acked, errors)
                for _ in range(connections)
            )
        )
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    latencies.sort()
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "rate": len(latencies) / elapsed,
        "errors": 0,
        "non2xx": len(errors),
        "p50_us": cuts[49] * 1e6,
        "p99_us": cuts[98] * 1e6,
        "acked": acked,
    }


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


# -- where the machine's time goes ------------------------------------------------------------------------
def cpu_seconds(server_pid: int) -> dict[str, float] | None:
    """CPU seconds used so far by the server's processes (the one started and its children), PostgreSQL's
    and the load generator's (Linux only; None elsewhere). Sampled before and after a measurement, the
    difference shows what each took of the cores, and so whether more server processes could gain."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    import resource
    tick = os.sysconf("SC_CLK_TCK")
    used = {"server": 0.0, "postgresql": 0.0, "load generator": 0.0}
    for pid, name, ppid, ticks in _processes():
        seconds = ticks / tick
        if pid == server_pid or ppid == server_pid:
            used["server"] += seconds
        elif name == "postgres":
            used["postgresql"] += seconds
    # the load generator: this process (the Python one) and its children that ended (each wrk run)
    own, ended = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    used["load generator"] = own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime
    return used


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median rate (its latencies with it)."""
    return dict(sorted(runs, key=lambda run: run["rate"])[len(runs) // 2])


def cpu_share(samples: list[tuple[dict[str, float] | None, dict[str, float] | None, float]]) -> str:
    """What each took of the cores over the measurements ``samples`` were taken around (before, after,
    seconds): each measurement's busy time summed, over their summed length."""
    measured = [(before, after) for before, after, _ in samples if before is not None and after is not None]
    if not measured or len(measured) < len(samples):
        return "not measured (no /proc)"
    seconds = sum(length for _, _, length in samples)
    used = {name: sum(after[name] - before[name] for before, after in measured) / seconds for name in measured[0][1]}
    parts = [f"{name} {share:.2f}" for name, share in used.items()]
    return f"{sum(used.values()):.2f} of {os.cpu_count()} cores busy ({', '.join(parts)})"


# -- one core's share per process ---------------------------------------------------------------------------
class CpuCaps:
    """Each server process in a cgroup of its own, capped at ``share`` of one core (the kernel's CFS quota:
    cgroup v2's ``cpu.max``, or v1's ``cpu.cfs_quota_us``). On a machine with fewer cores than processes this
    is how far more processes can take the load: each gets the same slice a core of its own would give it
    for the measurement, and PostgreSQL and the load generator keep the rest. Linux, as root."""

    PERIOD_US = 20_000

    def __init__(self, share: float) -> None:
        self.quota = int(share * self.PERIOD_US)
        self.groups: list[Path] = []
        v2, v1 = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/cpu")
        if (v2 / "cgroup.controllers").exists() and "cpu" in (v2 / "cgroup.controllers").read_text().split():
            self.root, self.v2 = v2, True
        elif (v1 / "cpu.cfs_quota_us").exists():
            self.root, self.v2 = v1, False
        else:
            raise SystemExit("--cpu-per-process: no cgroup cpu controller found (Linux, /sys/fs/cgroup)")
        if not os.access(self.root, os.W_OK):
            raise SystemExit(f"--cpu-per-process: {self.root} is not writable (run as root)")
        if self.v2:
            # children of the root may take the cpu controller only once the root hands it down
            (self.root / "cgroup.subtree_control").write_text("+cpu")

    def cap(self, pid: int) -> None:
        group = self.root / f"taskreport-bench-{os.getpid()}-{pid}"
        group.mkdir()
        self.groups.append(group)
        if self.v2:
            (group / "cpu.max").write_text(f"{self.quota} {self.PERIOD_US}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(self.quota))
        (group / "cgroup.procs").write_text(str(pid))

    def release(self) -> None:
        """Remove the groups (their processes have ended: an empty group is all rmdir takes)."""
        for group in self.groups:
            for _ in range(50):
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        self.groups = []


def serving_processes(server_pid: int, workers: int) -> list[int]:
    """The server process and, with several, each of its workers once all are running."""
    deadline = time.monotonic() + 30
    while True:
        children = [pid for pid, _, ppid, _ in _processes() if ppid == server_pid]
        if workers == 1 or len(children) >= workers or time.monotonic() > deadline:
            return [server_pid, *children]
        time.sleep(0.05)


def _processes() -> list[tuple[int, str, int, int]]:
    """(pid, name, parent's pid, CPU ticks used) of every process in /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        out.append((int(entry.name), name, int(fields[1]), int(fields[11]) + int(fields[12])))
    return out


def fresh_database(store: str, workdir: Path, n: int) -> str:
    if store == "sqlite":
        return str(workdir / f"bench{n}.db")
    import psycopg

    name = f"taskreport_bench_{os.getpid()}_{n}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def analyze(db: str) -> None:
    """Statistics for the tasks just made, as autovacuum gathers them within a minute on a running server:
    without them PostgreSQL guesses one task per project and plans each update as a scan of them all."""
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ANALYZE tasks")


def drop_database(store: str, db: str) -> None:
    if store == "postgresql":
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {db.rsplit('/', 1)[1]} WITH (FORCE)")


def one_run(args: argparse.Namespace, workdir: Path, workers: int, use_wrk: bool) -> dict[str, Any]:
    """No-op and PATCH rates with ``workers`` server processes on a fresh database; checks persistence."""
    db = fresh_database(args.store, workdir, workers)
    port = free_port()
    extra = ("--db-pool-size", str(args.db_pool_size)) if args.db_pool_size else ()
    caps = CpuCaps(args.cpu_per_process) if args.cpu_per_process else None
    server, token = start_server(workdir, port, db, workers, extra)
    base = f"http://127.0.0.1:{port}"
    prefix = "/api/local/default/tasks/"
    try:
        if caps is not None:
            for pid in serving_processes(server.pid, workers):
                caps.cap(pid)
        ids = [api("POST", f"{base}{prefix}", token, {"name": f"bench {i}"})["id"] for i in range(args.tasks)]
        if args.store == "postgresql":
            analyze(db)
        counter = iter(range(1, 10**12))

        def make_patch() -> bytes:
            n = next(counter)
            body = b'{"value": %d}' % n
            return (
                f"PATCH {prefix}{ids[n % len(ids)]}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body

        def make_ping() -> bytes:
            return b"GET /api/ping/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

        rounds = iter(range(1, 10**6))

        def measure(kind: str, duration: float) -> dict[str, Any]:
            if use_wrk:
                if kind == "noop":
                    return run_wrk(f"{base}/api/ping/", NOOP_SCRIPT, {}, args.connections, duration)
                # each run's values above the last's, so that the last acknowledged value is also the highest
                env = {"BENCH_TASKS": ",".join(ids), "BENCH_PREFIX": prefix, "BENCH_TOKEN": token,
                       "BENCH_START": str(next(rounds) * 10**8)}  # fmt: skip
                return run_wrk(f"{base}{prefix}", WRK_SCRIPT, env, args.connections, duration)
            return run_python(port, make_patch if kind == "patch" else make_ping, args.connections, duration)

        measure("noop", 1.0)  # warm up both paths (imports, connections, database pages) in every process
        measure("patch", 1.0)
        noops, patches, cpu = [], [], []
        for _ in range(args.rounds):
            # alternating: a machine whose speed drifts (other tenants) moves both sides of a round's ratio
            noops.append(measure("noop", args.duration))
            before, started = cpu_seconds(server.pid), time.monotonic()
            patches.append(measure("patch", args.duration))
            cpu.append((before, cpu_seconds(server.pid), time.monotonic() - started))
        noop, patch = median_run(noops), median_run(patches)
        patch["ratios"] = sorted(p["rate"] / n["rate"] for n, p in zip(noops, patches, strict=True))
        patch["acked"] = {}
        for run in patches:
            for tid, value in run["acked"].items():
                patch["acked"][tid] = max(value, patch["acked"].get(tid, value))
        patch["cpu"] = cpu_share(cpu)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
        if caps is not None:
            caps.release()

    # the server is gone: what the database holds now is what was committed
    sys.path.insert(0, str(ROOT))
    from taskreport._store import open_store

    store = open_store(db)
    with store.transaction(write=False) as tx:
        final = {row["public_id"]: row["value"] for row in tx.cur.all("SELECT public_id, value FROM tasks")}
    store.close()
    drop_database(args.store, db)
    lost = {tid: (value, final.get(tid)) for tid, value in patch["acked"].items() if (final.get(tid) or -1) < value}
    return {"noop": noop, "patch": patch, "lost": lost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--workers", default="1", help="server process counts to run, e.g. 1,2,4")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3,
                        help="no-op and PATCH measured alternately this many times; medians are printed")
    parser.add_argument("--tasks", type=int, default=256, help="tasks the PATCHes rotate over")
    parser.add_argument("--db-pool-size", type=int, default=0,
                        help="passed to serve (PostgreSQL: writer threads are 2 fewer, at most 6)")
    parser.add_argument("--python", action="store_true", help="use the Python load generator even if wrk exists")
    parser.add_argument("--cpu-per-process", type=float, default=0.0, metavar="SHARE",
                        help="cap each server process at SHARE of one core (e.g. 0.25; Linux cgroups, as root): "
                             "how PATCH/s grows with processes when each has a core's share of its own")
    args = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None and not args.python
    counts = [int(n) for n in args.workers.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="taskreport-bench-"))
    try:
        runs = {n: one_run(args, workdir, n, use_wrk) for n in counts}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    generator = "wrk (1 thread)" if use_wrk else "python asyncio load generator"
    print(
        f"taskreport serve, {args.store}, {args.connections} keep-alive connections, {generator}, "
        f"{args.duration:g} s each, {os.cpu_count()} cores"
    )
    if args.cpu_per_process:
        print(f"each server process capped at {args.cpu_per_process:g} of a core (cgroup CPU quota)")
    first = runs[counts[0]]
    failed = []
    for n, run in runs.items():
        noop, patch, lost = run["noop"], run["patch"], run["lost"]
        print(f" {n} server process(es):")
        for name, result in (("no-op GET /api/ping/", noop), ("PATCH task (persisted)", patch)):
            print(
                f"  {name:<24} {result['rate']:>9.0f} req/s   p50 {result['p50_us'] / 1000:6.2f} ms"
                f"   p99 {result['p99_us'] / 1000:6.2f} ms   errors {result['errors']}  non-2xx {result['non2xx']}"
            )
        ratios = patch["ratios"]
        spread = f" (rounds: {', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""
        print(f"  ratio PATCH/no-op: {statistics.median(ratios):.2f}x{spread} (target >= 0.5x with one process)")
        print(f"  during the PATCHes: {patch['cpu']}")
        if n != counts[0]:
            gain = patch["rate"] / first["patch"]["rate"]
            print(f"  PATCH/s against {counts[0]} process(es): {gain:.2f}x")
        print(f"  persistence: {len(patch['acked'])} tasks checked after shutdown, {len(lost)} below their last "
              "acknowledged value")
        if lost or patch["non2xx"] or patch["errors"]:
            failed.append(f"{n} processes: lost={dict(list(lost.items())[:5])} non2xx={patch['non2xx']}")
    if failed:
        raise SystemExit("FAILED: " + "; ".join(failed))


if __name__ == "__main__":
    main()
