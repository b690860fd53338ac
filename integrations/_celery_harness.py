"""Helpers of the Celery end-to-end suite: brokers (skip with the reason when one is down), a Redis database
of the test's own, real ``celery worker``/``celery beat`` processes, and waiting for what they report."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pgschema import postgres_schema, reachable

import taskreport

HERE = Path(__file__).parent
REDIS = ("127.0.0.1", 6379)
RABBITMQ = ("127.0.0.1", 5672)
#: Redis databases handed out to tests (0 holds the claims)
DATABASES = range(1, 16)


def need(service: str, address: tuple[str, int]) -> None:
    if not reachable(*address):
        pytest.skip(f"{service} is not running at {address[0]}:{address[1]} (.ci/run starts it)")


@contextlib.contextmanager
def redis_database() -> Iterator[int]:
    """A Redis database number of this test's own: claimed in database 0 (an expiring key, so a crashed
    run frees it), emptied before and after."""
    need("Redis", REDIS)
    import redis

    claims = redis.Redis(*REDIS, db=0)
    owner = f"{os.getpid()}-{secrets.token_hex(4)}"
    deadline = time.monotonic() + 60
    number = None
    while number is None:
        for candidate in DATABASES:
            if claims.set(f"taskreport-tests:db:{candidate}", owner, nx=True, ex=900):
                number = candidate
                break
        else:
            if time.monotonic() > deadline:
                pytest.skip("every Redis database is claimed by other tests")
            time.sleep(0.2)
    db = redis.Redis(*REDIS, db=number)
    db.flushdb()
    try:
        yield number
    finally:
        db.flushdb()
        if claims.get(f"taskreport-tests:db:{number}") == owner.encode():
            claims.delete(f"taskreport-tests:db:{number}")
        db.close()
        claims.close()


@contextlib.contextmanager
def rabbitmq_queue(prefix: str) -> Iterator[str]:
    """A queue name of this test's own on RabbitMQ's default vhost, deleted afterwards."""
    need("RabbitMQ", RABBITMQ)
    name = f"{prefix}-{secrets.token_hex(6)}"
    try:
        yield name
    finally:
        from kombu import Connection

        with contextlib.suppress(Exception), Connection("amqp://guest:guest@127.0.0.1:5672//") as conn:
            channel = conn.channel()
            channel.queue_delete(name)


@dataclasses.dataclass
class Setup:
    """Where a worker takes tasks from and reports to."""

    broker: str
    backend: str
    queue: str
    #: TASKREPORT_* for the worker; the publisher uses the same
    report: dict[str, str]
    flush: float = 0.1
    heartbeat: float | None = None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKREPORT_", "TR_CELERY_"))}
        env.update(self.report)
        env.update(
            TR_CELERY_BROKER=self.broker,
            TR_CELERY_BACKEND=self.backend,
            TR_CELERY_QUEUE=self.queue,
            TR_CELERY_FLUSH=str(self.flush),
            PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        if self.heartbeat is not None:
            env["TR_CELERY_HEARTBEAT"] = str(self.heartbeat)
        env.update(extra)
        return env

    def init_publisher(self, **options: Any) -> taskreport.Client:
        """This process reports like the worker (same place, same integration options)."""
        import _celery_app

        settings: dict[str, Any] = {"flush_interval": self.flush}
        if "TASKREPORT_URL" in self.report:
            settings.update(url=self.report["TASKREPORT_URL"], token=self.report["TASKREPORT_TOKEN"],
                            organization=self.report["TASKREPORT_ORG"], project=self.report["TASKREPORT_PROJECT"])
        else:
            settings["home"] = self.report["TASKREPORT_HOME"]
        settings.update(options)
        return taskreport.init(integrations=[_celery_app.integration(self.heartbeat)], **settings)


class Worker:
    """A real ``celery worker`` process (its own process group, so that it can be killed whole)."""

    def __init__(self, setup: Setup, log: Path, *args: str, **env: str) -> None:
        self.setup = setup
        self.log = log
        self.name = f"w{secrets.token_hex(4)}@localhost"
        command = [sys.executable, "-m", "celery", "-A", "_celery_app", "worker", "-n", self.name,
                   "-Q", setup.queue, "--without-gossip", "--without-mingle", "--without-heartbeat",
                   "-l", "info", *args]
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, cwd=HERE, env=setup.env(**env), stdout=self._out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while "ready." not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the celery worker did not start:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """kill -9 of the whole worker: its main process and every pool child."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # warm shutdown: running tasks finish, clients flush
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # a pool child left behind
        self._out.close()


class Beat:
    """A real ``celery beat`` process with one entry, ``every-second``."""

    def __init__(self, setup: Setup, directory: Path) -> None:
        self.log = directory / "beat.log"
        self._out = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "celery", "-A", "_celery_app", "beat", "-s",
                   str(directory / "schedule"), "-l", "info", "--max-interval", "1"]
        self.process = subprocess.Popen(command, cwd=HERE, env=setup.env(TR_CELERY_BEAT="1"), stdout=self._out,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._out.close()


# -- reading what was reported ------------------------------------------------------------------------------
def records(celery_id: str) -> list[taskreport.TaskRecord]:
    return list(taskreport.list_tasks(external_id=celery_id))


def wait_for(
    celery_id: str, check: Callable[[taskreport.TaskRecord], bool], timeout: float = 20.0, what: str = ""
) -> taskreport.TaskRecord:
    """The one record of ``celery_id`` once ``check`` holds for it (fails on a second record, or at the
    deadline with the last state seen)."""
    deadline = time.monotonic() + timeout
    seen: list[taskreport.TaskRecord] = []
    while time.monotonic() < deadline:
        seen = records(celery_id)
        assert len(seen) <= 1, f"{len(seen)} records for Celery task {celery_id}: {seen}"
        if seen and check(seen[0]):
            return seen[0]
        time.sleep(0.05)
    raise AssertionError(f"Celery task {celery_id}: {what or 'expected state'} not reached; last seen {seen}")


def status_is(*statuses: str) -> Callable[[taskreport.TaskRecord], bool]:
    return lambda record: record.status.value in statuses


def ended() -> Callable[[taskreport.TaskRecord], bool]:
    return status_is("success", "error", "cancelled")


def celery_postgres_schema() -> contextlib.AbstractContextManager[str]:
    """A PostgreSQL URL whose search_path is a schema of this test's own, dropped afterwards."""
    need("PostgreSQL", ("127.0.0.1", 5432))
    return postgres_schema("tr_celery")


def server_has_refs(url: str) -> bool:
    """Whether the server answers as ours (task references and the batch operation)."""
    import requests

    return "refs" in requests.get(f"{url}/api/ping/", timeout=5).headers.get("X-Taskreport-Features", "")
