"""The server's event-loop progress statement (PostgreSQL): client CPU and wall time per update, as the server
sends it (a raw cursor, its text made once per size) against the same statements through psycopg's ordinary
cursor (each statement's ``%s`` parsed anew past 50 parameters), alternating in one run.

Creates a database on the PostgreSQL at 127.0.0.1:5432 (dropped afterwards) with ``--tasks`` tasks, then for
each batch size sends ``--statements`` statements from one event loop, the way ``AsyncProgress.update_many``
does, and prints the process's CPU (user + system) and the wall time per update. The CPU is what matters
for a server process that is busy: it is time the event loop can't spend on requests.

    python bench/progress_statement.py [--sizes 1,8,32] [--statements 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"

Send = Callable[[list[tuple[str, dict[str, Any]]]], Awaitable[int]]


async def ordinary(url: str, scope: Any, sql: Callable[[str], str]) -> tuple[Send, Any]:
    """The same statements and rows through psycopg's default cursor, ``?`` made ``%s`` as the store's other
    paths do (``sql``, the store's dialect's): how the event loop sent them before it used a raw cursor."""
    import psycopg
    from psycopg.rows import dict_row

    from taskreport._store import _bulk
    from taskreport._store._rows import task_out

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)

    async def send(items: list[tuple[str, dict[str, Any]]]) -> int:
        n = 0
        for query, params in _bulk.returning_statements("postgresql", scope, items, time.time()):
            cursor = await conn.execute(sql(query), params)
            n += len([task_out(row, scope) for row in await cursor.fetchall()])
        return n

    return send, conn


async def measure(send: Send, ids: list[str], size: int, statements: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per update over ``statements`` statements of ``size`` updates."""
    for k in range(10):  # past psycopg's threshold for preparing, as in a running server
        await send([(ids[i], {"value": k}) for i in range(size)])
    before, started = os.times(), time.perf_counter()
    for k in range(statements):
        offset = (k * size) % (len(ids) - size + 1)
        written = await send([(ids[offset + i], {"value": k}) for i in range(size)])
        assert written == size, f"{written} of {size} written"
    wall, after = time.perf_counter() - started, os.times()
    cpu = (after.user - before.user) + (after.system - before.system)
    updates = statements * size
    return cpu / updates * 1e6, wall / updates * 1e6


async def run(url: str, scope: Any, ids: list[str], sql: Callable[[str], str],
              args: argparse.Namespace) -> dict[int, dict[str, list[tuple[float, float]]]]:  # fmt: skip
    from taskreport._store import AsyncProgress

    fast = AsyncProgress(url)
    slow, conn = await ordinary(url, scope, sql)

    async def lane(items: list[tuple[str, dict[str, Any]]]) -> int:
        return len(await fast.update_many(scope, items))

    results: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for size in args.sizes:
        results[size] = {"lane": [], "ordinary": []}
        for _ in range(args.rounds):  # alternating, so that a change in the machine's speed hits both
            results[size]["ordinary"].append(await measure(slow, ids, size, args.statements))
            results[size]["lane"].append(await measure(lane, ids, size, args.statements))
    fast.close()
    await conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,8,32", type=lambda s: [int(n) for n in s.split(",")])
    parser.add_argument("--statements", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=256)
    args = parser.parse_args()
    if max(args.sizes) > args.tasks:
        parser.error("--sizes: a statement's updates are of distinct tasks, at most --tasks")

    import psycopg

    from taskreport._store import open_store

    name = f"taskreport_bench_stmt_{os.getpid()}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    url = ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        store = open_store(url)
        with store.transaction() as tx:
            scope = tx.ensure_project("bench", "default")
            ids = [tx.create_task(scope, {"name": f"bench {i}"})["id"] for i in range(args.tasks)]
        store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE tasks")  # a running server's table has statistics
        results = asyncio.run(run(url, scope, ids, store.db.dialect.sql, args))
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")

    print(
        f"progress statement from an event loop, {args.statements} statements per measurement, median of "
        f"{args.rounds} alternating rounds, {os.cpu_count()} cores"
    )
    print(
        f"  {'updates/statement':>17}  {'lane CPU':>10}  {'ordinary CPU':>12}  {'CPU ratio':>9}  "
        f"{'lane wall':>10}  {'ordinary wall':>13}"
    )
    for size, by in results.items():
        lane_cpu, lane_wall = (statistics.median(x[i] for x in by["lane"]) for i in (0, 1))
        slow_cpu, slow_wall = (statistics.median(x[i] for x in by["ordinary"]) for i in (0, 1))
        print(
            f"  {size:>17}  {lane_cpu:>8.1f}µs  {slow_cpu:>10.1f}µs  {lane_cpu / slow_cpu:>8.2f}x  "
            f"{lane_wall:>8.1f}µs  {slow_wall:>11.1f}µs"
        )
    print("  (per update; CPU is this process's user + system time: psycopg, the rows, the socket)")


if __name__ == "__main__":
    main()
