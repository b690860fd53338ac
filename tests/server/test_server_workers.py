"""``taskreport serve --workers N``: several real server processes on one port and one database.

Concurrent writers from many connections spread over the processes and their writer threads, so two
transactions can take the same rows in opposite orders: nothing of it may reach a client as an error. A
worker that dies is replaced while the others go on answering; SIGTERM stops them all."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import web

TASKREPORT = Path(sys.executable).parent / "taskreport"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # the command may hold spaces and parentheses: fields after the last ")" are fixed
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def _wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


@contextlib.contextmanager
def _serving(tmp_path: Path, db: str, workers: int) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """``taskreport serve --workers N`` on ``db``, answering and with its N processes up."""
    if not TASKREPORT.exists():
        pytest.skip(f"no console script at {TASKREPORT}: pip install -e '.[server]'")
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if (not k.startswith("TASKREPORT_") or k == "TASKREPORT_SCRYPT_N")},
        "TASKREPORT_HOME": str(tmp_path / "home"),
        "TASKREPORT_CONFIG": str(tmp_path / "config.toml"),
    }
    process = subprocess.Popen(
        [str(TASKREPORT), "serve", "--db", db, "--port", str(port), "--workers", str(workers), "--log-level",
         "warning", "--no-write-config", "--token-cache-seconds", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        token = ""
        deadline = time.monotonic() + 30
        while not token and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.strip().startswith("token:"):
                token = line.split()[1]
        assert token, "serve printed no token"
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return web.get(f"{url}/api/ping/", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _wait_for(up)
        _wait_for(lambda: len(_children(process.pid)) == workers)
        # and every one listening: on Linux each has a socket of its own, and one process answering the ping
        # says nothing of another still starting (a test that then kills the first found the port refusing)
        _wait_for(lambda: all(_sockets_by_process(_children(process.pid), port, "0A").values()))
        yield process, url, token
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                for child in _children(process.pid):
                    os.kill(child, signal.SIGKILL)
                process.kill()
                process.wait()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def workers_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    db = str(tmp_path / "served.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    with _serving(tmp_path, db, 2) as served:
        yield served


def _sockets_by_process(pids: set[int], port: int, state: str) -> dict[int, int]:
    """How many sockets on local ``port`` in ``state`` (01 established, 0A listening) each process holds."""
    inodes: dict[str, int] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                    inodes[fields[9]] = 0
    held = dict.fromkeys(pids, 0)
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    held[pid] += 1
    return held


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel spreads connections on Linux only")
def test_connections_opened_at_once_are_spread_over_the_processes(tmp_path: Path) -> None:
    """A client opening its keep-alive connections all at once (a load generator, a proxy's pool) gets them
    spread over the processes: with one shared listening socket, the first process to accept took them all."""
    with _serving(tmp_path, str(tmp_path / "served.db"), 4) as (process, url, _token):
        port = int(url.rsplit(":", 1)[1])
        # every process listening (one that is still starting would get none of what is opened now)
        _wait_for(lambda: min(_sockets_by_process(_children(process.pid), port, "0A").values()) >= 1)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
        try:
            for client in clients:
                client.sendall(b"GET /api/ping/ HTTP/1.1\r\nHost: x\r\n\r\n")
            for client in clients:
                assert client.recv(65536).startswith(b"HTTP/1.1 200")
            held = _sockets_by_process(_children(process.pid), port, "01")
        finally:
            for client in clients:
                client.close()
    assert sum(held.values()) == 64
    # spread by a hash of each connection's addresses: each of the 4 holds some, none the most of them
    assert min(held.values()) >= 1 and max(held.values()) <= 32, held


def test_concurrent_writes_across_worker_processes_all_succeed(
    workers_server: tuple[subprocess.Popen[str], str, str],
) -> None:
    process, url, token = workers_server
    tasks_url = f"{url}/api/local/default/tasks/"
    headers = {"Authorization": f"Token {token}"}
    ids = [web.post(tasks_url, json={"name": f"t{n}"}, headers=headers).json()["id"] for n in range(6)]
    failures: list[str] = []
    acked: dict[str, int] = {}
    lock = threading.Lock()

    def client(k: int) -> None:
        # each client walks the tasks in its own order, with data merges that take the ordinary write path
        order = ids[k % len(ids) :] + ids[: k % len(ids)]
        if k % 2:
            order.reverse()
        with web.client(headers=headers, timeout=30) as http:
            for n in range(8):
                for task_id in order:
                    value = k * 1000 + n
                    body: dict[str, Any] = {"value": value}
                    if n % 3 == 0:
                        body["data"] = {f"client{k}": n}
                    answer = http.patch(f"{tasks_url}{task_id}/", json=body)
                    if answer.status_code != 200:
                        failures.append(f"{answer.status_code} {answer.text[:200]}")
                        continue
                    with lock:
                        acked[task_id] = acked.get(task_id, 0) + 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert sum(acked.values()) == 8 * 8 * len(ids)
    # both processes answered: each keeps its own keep-alive connections, and the kernel spreads them
    assert len(_children(process.pid)) == 2


def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(
    workers_server: tuple[subprocess.Popen[str], str, str],
) -> None:
    process, url, token = workers_server
    headers = {"Authorization": f"Token {token}"}
    before = _children(process.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    after = _wait_for(lambda: (c := _children(process.pid)) and len(c) == 2 and victim not in c and c)
    assert len(after - before) == 1
    for n in range(20):  # new connections each: whichever process takes them answers
        answer = web.post(f"{url}/api/local/default/tasks/", json={"name": f"after {n}"}, headers=headers)
        assert answer.status_code == 201
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    assert _children(process.pid) == set()
    for pid in after:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
