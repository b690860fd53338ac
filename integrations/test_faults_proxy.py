"""Real client processes reporting to a real ``taskreport serve`` through tests/faultproxy.py, one proxy per
process so that every request the proxy sees is known to come from that process.

One process meets rate limits and an unavailable service: ``429`` with ``Retry-After`` in seconds and as an
HTTP date, ``503`` without it (retried with backoff) and with it (a pause, like a 429). The other meets a
slow service: answers slower than its request timeout, so that requests it gave up on still reach the
server and it sends the same creates again, then answers that are slow but in time. Both must deliver every
task's end, with one task per create."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _faults import Served, burst_spec, read_tasks, start_burst, wait_until
from faultproxy import FaultProxy, Seen

TASKS = 8


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    served = Served(str(tmp_path / "store.db"), tmp_path / "server")
    # listening before the clients start: a request the proxy could not forward would never be answered
    served.start()
    yield served
    served.stop()


def _ok(seen: Seen) -> bool:
    return not seen.injected and 200 <= seen.status < 300


def _created_refs(seen: Seen) -> list[str]:
    body = seen.body if isinstance(seen.body, dict) else {}
    return [op["ref"] for op in body.get("operations") or [] if op.get("op") == "create"]


def _after(proxy: FaultProxy, seen: Seen) -> list[Seen]:
    return [s for s in proxy.requests() if s.at > seen.at]


def _wait_answered_after(proxy: FaultProxy, what: str, after: float) -> None:
    wait_until(what, lambda: any(_ok(s) and s.at > after for s in proxy.requests()))


@pytest.mark.timeout(90)
def test_rate_limits_unavailability_and_slow_answers_lose_and_duplicate_nothing(served: Served,
                                                                                 tmp_path: Path) -> None:
    limited, slow = FaultProxy(served.url), FaultProxy(served.url)
    # slow from the very first request, so that the answers to the creates are lost and the creates replayed
    slow.delay = 0.8
    gates = {"limited": tmp_path / "limited.gate", "slow": tmp_path / "slow.gate"}
    specs = {
        "limited": burst_spec("limited", tmp_path, tasks=TASKS, hold=2, gate=str(gates["limited"])),
        "slow": burst_spec("slow", tmp_path, tasks=TASKS, hold=TASKS, gate=str(gates["slow"]), request_timeout=0.5),
    }
    procs = {name: start_burst(spec, served.client_env(tmp_path / f"{name}-home", url=proxy.url), tmp_path)
             for (name, spec), proxy in zip(specs.items(), (limited, slow), strict=True)}
    date_pause_ends = 0.0
    try:
        _wait_answered_after(limited, "a first delivery through the limiting proxy", 0)
        start = time.monotonic()
        limited.fail(429, headers={"Retry-After": "1"})
        limited.fail(503)
        limited.fail(503)
        limited.fail(503, headers={"Retry-After": "1"})

        def replayed_create() -> bool:
            forwarded = [ref for s in slow.requests() if _ok(s) for ref in _created_refs(s)]
            return any(forwarded.count(ref) > 1 for ref in forwarded)

        wait_until("a create the slow server applied twice (its first answer lost)", replayed_create)
        slow.delay = 0.25  # slow, but within the request timeout
        switched = time.monotonic()

        wait_until("the four faults answered", lambda: len([s for s in limited.requests() if s.injected]) == 4)
        _wait_answered_after(limited, "a delivery after the faults",
                             max(s.at for s in limited.requests() if s.injected))
        # an HTTP date is whole seconds: at least two seconds ahead
        when = time.time() + 3
        date_pause_ends = time.monotonic() + (int(when) - time.time())
        limited.fail(429, headers={"Retry-After": email.utils.formatdate(when, usegmt=True)})
        wait_until("the dated 429 answered", lambda: len([s for s in limited.requests() if s.injected]) == 5)
        _wait_answered_after(limited, "a delivery after the dated 429", date_pause_ends)
        gates["limited"].touch()

        wait_until("two slow answers in time",
                   lambda: len([s for s in slow.requests() if _ok(s) and s.at > switched + 0.8]) >= 2)
        slow.delay = 0
        # nothing older may still be on its way when the ends are made: a late copy of an older update
        # would land after them
        wait_until("every request to the slow proxy answered", lambda: all(s.status for s in slow.requests()))
        gates["slow"].touch()
        for proc in procs.values():
            proc.wait(60)
        final = read_tasks(served.url, tmp_path / "reader", token=served.token)
    finally:
        for gate in gates.values():
            gate.touch()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        limited.close()
        slow.close()

    reports: dict[str, dict[str, Any]] = {}
    for name, proc in procs.items():
        err = (tmp_path / f"{name}.err").read_text()
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
        reports[name] = json.loads((tmp_path / f"{name}.out").read_text().splitlines()[-1])
        assert reports[name]["stats"]["failed"] == 0, reports[name]
        # the process delivered everything itself: nothing was left to the spool
        spool = tmp_path / f"{name}-home" / "spool"
        assert not spool.exists() or [p.name for p in spool.iterdir()] == []

    seen = limited.requests()
    faults = [s for s in seen if s.injected and s.at >= start]
    assert [f.status for f in faults] == [429, 503, 503, 503, 429]
    for fault, pause_ends in zip(faults, (faults[0].at + 1, None, None, faults[3].at + 1, date_pause_ends),
                                 strict=True):
        later = _after(limited, fault)
        assert later, f"nothing was sent after the {fault.status}: not retried"
        if pause_ends is not None:
            # the pause is counted from the answer, which leaves the proxy after it records the request
            assert later[0].at >= pause_ends - 0.005, (fault, later[0].at - fault.at)
    assert faults[4].at < date_pause_ends - 0.5, "the dated 429 came too late to ask for a pause"
    assert reports["slow"]["stats"]["retries"] >= 2

    made: dict[str, int] = {}
    for spec in specs.values():
        made.update(json.loads(Path(spec["made"]).read_text()))
    assert len(made) == 2 * TASKS
    assert set(final) == set(made)
    for name, value in made.items():
        assert len(final[name]) == 1, f"{name} was made more than once: {final[name]}"
        (record,) = final[name]
        assert (record.status.value, record.value) == ("success", value), name
