"""The spool and its backlog: a spooled task is in exactly one file; a large backlog never starves the
process that claims it; waiting on a service that is down sleeps; deadlines hold. Real servers on loopback,
a real proxy to take them off the network, real subprocesses."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from faultproxy import FaultProxy, init_through
from server_fixtures import LiveServer

import taskreport
from taskreport import _spool
from taskreport._refs import new_ref


def env_for(live: LiveServer, proxy: FaultProxy) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TASKREPORT_URL=proxy.url, TASKREPORT_TOKEN=live.token, TASKREPORT_ORG=live.organization,
               TASKREPORT_PROJECT=live.project)
    return env


def run_script(body: str, env: dict[str, str], timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(body)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    return done, time.monotonic() - start


def spool_records(home: Path) -> list[dict[str, object]]:
    """Every record in the spool, claimed or not."""
    out: list[dict[str, object]] = []
    for path in (home / "spool").glob("*.json*"):
        out.extend(json.loads(path.read_text())["records"])
    return out


def write_backlog(live: LiveServer, proxy: FaultProxy, home: Path, count: int) -> list[str]:
    """A spool left by an earlier process: ``count`` ended tasks, never sent."""
    target = taskreport.Config(url=proxy.url, organization=live.organization, project=live.project).target
    refs = [new_ref() for _ in range(count)]
    records = [{"ref": ref, "id": None, "create": {"name": f"old-{i}", "status": "success"}, "update": None,
                "parent_ref": None, "parent_id": None, "name": None} for i, ref in enumerate(refs)]
    path = _spool.write(home / "spool", target, records)
    assert path is not None
    # written by "another process": this one's own files are never claimed by itself
    path.rename(path.with_name(path.name.replace(f"-{_spool._token}-", "-0123456789ab-")))
    return refs


def server_names(live: LiveServer) -> list[str]:
    import requests

    names: list[str] = []
    url: str | None = live.tasks_url + "?page_size=1000"
    while url:
        body = requests.get(url, headers=live.headers(), timeout=10).json()
        names += [t["name"] for t in body["results"]]
        url = body["next"]
    return names


def test_init_mid_run_leaves_each_spooled_task_in_exactly_one_file(sqlite_server: LiveServer, proxy: FaultProxy,
                                                                   isolated: Path) -> None:
    write_backlog(sqlite_server, proxy, isolated, 50)
    proxy.stop()
    init_through(proxy, sqlite_server, flush_interval=0.05, exit_timeout=0.5)
    taskreport.Task.create("own").success()  # starts the sender, which claims the backlog
    time.sleep(0.3)
    init_through(proxy, sqlite_server, flush_interval=0.05, exit_timeout=0.5)  # mid-run
    taskreport.Task.create("own 2").success()
    time.sleep(0.3)
    init_through(proxy, sqlite_server, flush_interval=0.05, exit_timeout=0.5)
    time.sleep(0.3)
    names = [r["create"]["name"] for r in spool_records(isolated)]  # type: ignore[index]
    assert sorted(names) == sorted(f"old-{i}" for i in range(50))  # no copies, none lost
    proxy.start()
    assert taskreport.flush(10)
    taskreport.get_client().deliver_spool(10)
    assert sorted(server_names(sqlite_server)) == sorted([f"old-{i}" for i in range(50)] + ["own", "own 2"])
    assert list((isolated / "spool").iterdir()) == []


def test_a_large_backlog_never_starves_the_process_that_claims_it(sqlite_server: LiveServer, proxy: FaultProxy,
                                                                  isolated: Path) -> None:
    write_backlog(sqlite_server, proxy, isolated, 5000)
    proxy.delay = 0.3  # a slow service: the backlog can't all go before this process exits
    done, elapsed = run_script(
        """
        import taskreport
        taskreport.init(exit_timeout=2.0)
        for i in range(3):
            taskreport.Task.create(f"mine-{i}").success()
        """,
        env_for(sqlite_server, proxy),
    )
    assert done.returncode == 0, done.stderr
    assert elapsed < 6, elapsed  # its own exit deadline held, backlog or not
    proxy.delay = 0
    delivered = server_names(sqlite_server)
    assert {f"mine-{i}" for i in range(3)} <= set(delivered)  # its own tasks went first
    left = [r["create"]["name"] for r in spool_records(isolated)]  # type: ignore[index]
    old_delivered = [n for n in delivered if n.startswith("old-")]
    assert set(left) | set(old_delivered) == {f"old-{i}" for i in range(5000)}  # none lost
    assert len(left) == len(set(left)) and len(old_delivered) == len(set(old_delivered))  # no copies
    # only what was on its way at the exit (one chunk at most) may be both delivered and kept: a replay of it
    # is harmless (a create by reference is made once)
    assert len(set(left) & set(old_delivered)) <= 1000
    assert not any(n.startswith("mine-") for n in left)


def test_waiting_on_a_service_that_is_down_sleeps(sqlite_server: LiveServer, proxy: FaultProxy) -> None:
    proxy.stop()
    done, elapsed = run_script(
        """
        import resource, taskreport
        taskreport.init(exit_timeout=0.1)
        for i in range(3):
            taskreport.Task.create(f"t{i}").success()
        assert not taskreport.flush(3)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(usage.ru_utime + usage.ru_stime)
        """,
        env_for(sqlite_server, proxy),
    )
    assert done.returncode == 0, done.stderr
    cpu = float(done.stdout.strip().splitlines()[-1])
    assert 2.9 < elapsed < 8
    # interpreter start-up and imports included: waiting itself must cost next to nothing
    assert cpu < 1.0, cpu


def test_flush_spool_honours_its_timeout_with_the_service_down(sqlite_server: LiveServer, proxy: FaultProxy,
                                                               isolated: Path) -> None:
    write_backlog(sqlite_server, proxy, isolated, 200)
    proxy.stop()
    cli = Path(sys.executable).parent / "taskreport"
    start = time.monotonic()
    done = subprocess.run([str(cli), "flush-spool", "--timeout", "3"], env=env_for(sqlite_server, proxy),
                          capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    assert done.returncode != 0 and "not all could be delivered" in done.stderr
    assert elapsed < 6, elapsed
    assert len(spool_records(isolated)) == 200  # kept, in one place


def test_without_a_spool_undelivered_changes_are_dropped_with_a_log_line(
    sqlite_server: LiveServer, proxy: FaultProxy, isolated: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.stop()
    init_through(proxy, sqlite_server, spool=False, exit_timeout=0.2)
    taskreport.Task.create("lost").success()
    with caplog.at_level(logging.WARNING, logger="taskreport"):
        assert not taskreport.shutdown()
    assert "dropped (spool is off)" in caplog.text
    assert not (isolated / "spool").exists()


def test_a_change_answered_while_the_exit_spooled_it_is_not_kept() -> None:
    """A round still on its way at exit is spooled, in case it never arrives; its answer may come while the
    records are being made. What was answered leaves nothing to send: no empty record is kept for it, unless
    a child spooled beside it needs its id."""
    from taskreport._pending import Entry

    def answered(entry: Entry) -> Entry:
        entry.id, entry.acked = f"id-{entry.ref}", True
        return entry

    unanswered = Entry(new_ref(), {}, born_here=True)
    done = answered(Entry(new_ref(), {}, born_here=True))
    changed_since = answered(Entry(new_ref(), {}, born_here=True))
    parent = Entry(new_ref(), {}, born_here=True)
    child = Entry(new_ref(), {}, born_here=True, parent=parent)
    records = [_spool.record_of(e, f) for e, f in [
        (unanswered, {"name": "a", "status": "success"}),
        (done, {}),
        (changed_since, {"status": "error"}),
        (child, {"name": "c"}),  # recorded before its parent's answer came: it names the parent by reference
    ]]  # fmt: skip
    records.append(_spool.record_of(answered(parent), {}))
    kept = {r["ref"]: r for r in _spool.worth_keeping(records)}
    assert set(kept) == {unanswered.ref, changed_since.ref, child.ref, parent.ref}
    assert kept[unanswered.ref]["create"] == {"name": "a", "status": "success"}
    assert kept[changed_since.ref]["update"] == {"status": "error"}
    assert kept[child.ref]["parent_ref"] == parent.ref and kept[parent.ref]["id"] == parent.id
