"""A real ``taskreport serve`` killed with SIGKILL in the middle of a burst of updates from four client
processes, then started again on the same port and store, once on SQLite and once on PostgreSQL.

What a user relies on: a change the library said was delivered (``flush()`` returned True, so the server
answered it with a 2xx) is in the store the killed server left behind; and every task's end arrives in the
end, whether its process kept retrying until the server came back or exited during the outage and left it
to the spool (delivered here by ``taskreport flush-spool``)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _faults import (
    TASKREPORT,
    Served,
    burst_spec,
    postgres_store,
    read_acks,
    read_tasks,
    start_burst,
    wait_until,
)

CLIENTS = 4
TASKS = 10
HOLD = 3
#: these clients end their last tasks and exit while the server is down: their ends go to the spool
EXIT_DURING_OUTAGE = (0, 1)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "store.db")
    else:
        with postgres_store() as url:
            yield url


def _store_url(store: str) -> str:
    return store if store.startswith("postgresql://") else f"sqlite://{store}"


def _has_acked_end(acks: Path) -> bool:
    return any("success" in (state[0] for state in ack["states"].values()) for ack in read_acks(acks))


@pytest.mark.timeout(90)
def test_a_server_killed_mid_burst_loses_no_acknowledged_write_and_every_end_arrives(
    store: str, tmp_path: Path
) -> None:
    served = Served(store, tmp_path / "server")
    clients_home = tmp_path / "clients-home"
    down, up = tmp_path / "down", tmp_path / "up"
    specs = [
        burst_spec(f"c{i}", tmp_path, tasks=TASKS, hold=HOLD,
                   gate=str(down if i in EXIT_DURING_OUTAGE else up),
                   # a process leaving during the outage gives up on delivery soon, and spools
                   exit_timeout=0.5 if i in EXIT_DURING_OUTAGE else 15.0)
        for i in range(CLIENTS)
    ]
    env = served.client_env(clients_home)
    # the clients start while the server does (they retry until it listens): the two start-ups overlap
    served.launch()
    procs = [start_burst(spec, env, tmp_path) for spec in specs]
    flush_spool: subprocess.Popen[str] | None = None
    try:
        served.wait_ready()
        # the kill comes once the server has acknowledged ends from every client, with every burst still on
        wait_until("acknowledged ends from every client",
                   lambda: all(_has_acked_end(Path(s["acks"])) for s in specs)
                   and all(p.poll() is None for p in procs))
        killed_at = time.time()
        served.kill()
        down.touch()
        for i in EXIT_DURING_OUTAGE:
            procs[i].wait(30)

        # what the killed server left, read from its store before anything can write there again
        left = read_tasks(_store_url(store), tmp_path / "reader")
        acked = [ack for s in specs for ack in read_acks(Path(s["acks"])) if ack["t"] < killed_at]
        assert acked
        for ack in acked:
            for name, (status, value) in ack["states"].items():
                assert name in left, f"{name} was acknowledged before the kill but is not in the store"
                (record,) = left[name]
                # values only grow, so a later write may have landed too, never an earlier one
                assert record.value >= value, (name, record.value, value)
                if status == "success":
                    assert (record.status.value, record.value) == ("success", value), name

        # the restart, the remaining clients' ends (which they keep until it listens) and the command a user
        # (or cron) runs to deliver what the processes that left during the outage spooled, all at once
        served.launch()
        up.touch()
        flush_spool = subprocess.Popen([str(TASKREPORT), "flush-spool", "--timeout", "30"], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        served.wait_ready()
        flushed_out, flushed_err = flush_spool.communicate(timeout=60)
        for proc in procs:
            proc.wait(60)
        final = read_tasks(served.url, tmp_path / "reader", token=served.token)
    finally:
        down.touch()
        up.touch()
        children: list[subprocess.Popen[Any]] = [*procs, *([flush_spool] if flush_spool else [])]
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        served.stop()

    for i, (spec, proc) in enumerate(zip(specs, procs, strict=True)):
        err = (tmp_path / f"{spec['name']}.err").read_text()
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
        report: dict[str, Any] = json.loads((tmp_path / f"{spec['name']}.out").read_text().splitlines()[-1])
        assert report["stats"]["failed"] == 0, report
        if i in EXIT_DURING_OUTAGE:
            assert "not delivered before exit; spooled to" in err, err
    assert flush_spool is not None and flush_spool.returncode == 0, flushed_err
    delivered = re.search(r"delivered (\d+) spooled", flushed_out)
    assert delivered and int(delivered.group(1)) >= HOLD * len(EXIT_DURING_OUTAGE), flushed_out
    assert [p.name for p in (clients_home / "spool").iterdir()] == []

    made: dict[str, int] = {}
    for spec in specs:
        made.update(json.loads(Path(spec["made"]).read_text()))
    assert len(made) == CLIENTS * TASKS
    assert set(final) == set(made)
    for name, value in made.items():
        assert len(final[name]) == 1, f"{name} was made more than once: {final[name]}"
        (record,) = final[name]
        assert (record.status.value, record.value) == ("success", value), name
