"""Helpers of the fault-injection suite (``test_faults_*.py``): a real ``taskreport serve`` process that can be
killed and restarted on its port and store, a PostgreSQL schema of the test's own, reading what a store or a
server holds, and the client process that produces a burst of updates.

Run as a script, this module is that client (not collected by pytest)::

    python integrations/_faults.py burst SPEC_JSON

It reports to ``TASKREPORT_URL`` through the library, as a user's program does: it makes ``spec["tasks"]``
tasks, raises every running task's value at each step, and ends them one by one with ``success`` (at their
value of the moment), keeping the last ``spec["hold"]`` running until the file ``spec["gate"]`` exists, which
ends them all. Every few steps it calls ``taskreport.flush()``; when that says everything was delivered, it
appends the states it had set before the call to ``spec["acks"]`` (one JSON line, with the wall time), since
that is the library telling its user the service has them. Before it exits (and so before the exit hook
delivers or spools the rest) it writes the final value of every task to ``spec["made"]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TASKREPORT = Path(sys.executable).parent / "taskreport"
#: what ``taskreport serve`` makes on a new database
ORGANIZATION = "local"
PROJECT = "default"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process: none of the caller's taskreport settings, a home and config file of
    the test's own, and unbuffered output (so that a line is in its file the moment it is printed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKREPORT_")}
    env.update(TASKREPORT_HOME=str(home), TASKREPORT_CONFIG=str(home.parent / f"{home.name}.toml"),
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 30.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class Served:
    """``taskreport serve`` in a process of its own, on a fixed port and store, so that it can be killed and
    started again where its clients expect it."""

    def __init__(self, store: str, workdir: Path) -> None:
        self.store = store
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = clean_env(workdir / "home")
        self.token = provision(store)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log = workdir / "serve-1.log"

    def launch(self) -> None:
        """Start the process without waiting for it to listen (clients retry meanwhile)."""
        if not TASKREPORT.exists():
            import pytest

            pytest.skip(f"no console script at {TASKREPORT}: pip install -e '.[server]'")
        self.starts += 1
        self.log = self.workdir / f"serve-{self.starts}.log"
        argv = [str(TASKREPORT), "serve", "--port", str(self.port), "--db", self.store, "--no-write-config",
                "--log-level", "warning", "--sweep-interval", "0"]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def wait_ready(self) -> None:
        process = self.process
        assert process is not None

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"serve exited with {process.returncode}: {self.log.read_text()}")
            return self.ping()

        wait_until(f"taskreport serve on {self.url}", ready)

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def ping(self) -> bool:
        import requests

        try:
            return requests.get(f"{self.url}/api/ping/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; whatever the store has is what a crash leaves."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def client_env(self, home: Path, url: str | None = None) -> dict[str, str]:
        """A client's environment: reporting here (or at ``url``, a proxy in front of this server)."""
        return clean_env(home, TASKREPORT_URL=url or self.url, TASKREPORT_TOKEN=self.token,
                         TASKREPORT_ORG=ORGANIZATION, TASKREPORT_PROJECT=PROJECT)


def provision(store: str) -> str:
    """Make the project ``taskreport serve`` would make on a new database, and a token for it, ahead of the
    server: its own first start would also make a user, whose password hash (scrypt) costs seconds of CPU."""
    from taskreport._store import open_store

    opened = open_store(store)
    try:
        with opened.transaction() as tx:
            tx.ensure_project(ORGANIZATION, PROJECT)
            return str(tx.create_token(ORGANIZATION, name="faults"))
    finally:
        opened.close()


def postgres_store() -> contextlib.AbstractContextManager[str]:
    """A PostgreSQL URL whose search_path is a schema of this test's own, dropped afterwards (with any
    connection a killed server left open)."""
    # imported here: this module is also the clients' script, run where neither pytest nor tests/ is importable
    from pgschema import postgres_schema

    return postgres_schema("tr_faults")


def read_tasks(url: str, home: Path, token: str | None = None) -> dict[str, list[Any]]:
    """Every task of the project, by name, read from a store URL or a server by a client of its own (never the
    process-wide one, which the tests leave alone)."""
    import taskreport

    client = taskreport.Client(taskreport.Config(url=url, token=token, organization=ORGANIZATION, project=PROJECT,
                                                 home=home, spool=False))
    try:
        by_name: dict[str, list[Any]] = {}
        for record in client.list_tasks(page_size=500):
            by_name.setdefault(record.name, []).append(record)
        return by_name
    finally:
        client.close(timeout=0)


def start_burst(spec: dict[str, Any], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    name = spec["name"]
    with (logs / f"{name}.out").open("wb") as out, (logs / f"{name}.err").open("wb") as err:
        return subprocess.Popen([sys.executable, str(HERE / "_faults.py"), "burst", json.dumps(spec)],
                                stdout=out, stderr=err, env=env)


def read_acks(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    # the last line may be half written while the client runs
    lines = path.read_text().splitlines()
    out = []
    for line in lines:
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def burst_spec(name: str, workdir: Path, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "tasks": 10,
        "hold": 3,
        "gate": None,
        "every": 3,
        "pace": 0.02,
        "flush_every": 2,
        "flush_timeout": 0.3,
        "flush_interval": 0.05,
        "exit_timeout": 10.0,
        "request_timeout": 2.0,
        "acks": str(workdir / f"{name}.acks"),
        "made": str(workdir / f"{name}.made"),
    }
    spec.update(overrides)
    return spec


# -- the client process -------------------------------------------------------------------------------
def burst(spec: dict[str, Any]) -> int:
    import taskreport

    taskreport.init(organization=ORGANIZATION, project=PROJECT, flush_interval=spec["flush_interval"],
                    exit_timeout=spec["exit_timeout"], request_timeout=spec["request_timeout"])
    names = [f"{spec['name']}-{j:02d}" for j in range(spec["tasks"])]
    tasks = {n: taskreport.Task.create(n, status="processing", value=0, value_max=100_000) for n in names}
    values = dict.fromkeys(names, 0)
    running = list(names)
    ended: set[str] = set()
    gate = Path(spec["gate"]) if spec["gate"] else None
    step = 0
    with open(spec["acks"], "a", encoding="utf-8") as acks:
        while running:
            step += 1
            for n in running:
                values[n] += 1
                tasks[n].update(value=values[n])
            if gate is None or gate.exists():
                ending, running = running, []
            elif step % spec["every"] == 0 and len(running) > spec["hold"]:
                ending = [running.pop(0)]
            else:
                ending = []
            for n in ending:
                tasks[n].success(value=values[n])
                ended.add(n)
            if step % spec["flush_every"] == 0:
                states = {n: ["success" if n in ended else "processing", values[n]] for n in names}
                if taskreport.flush(spec["flush_timeout"]):
                    acks.write(json.dumps({"t": time.time(), "states": states}) + "\n")
                    acks.flush()
            time.sleep(spec["pace"])
    Path(spec["made"]).write_text(json.dumps(values))
    print(json.dumps({"stats": taskreport.stats(), "steps": step}), flush=True)
    return 0


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "burst":
        return burst(json.loads(args[0]))
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
