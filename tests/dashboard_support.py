"""What the dashboard's tests share: a signed-in HTTP client, an SSE reader, a real library client in another
process, and Debian's Chromium driven by Playwright (skipped, with the reason, where there is none)."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
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

CHROMIUM = os.environ.get("TASKREPORT_TEST_CHROMIUM", "/usr/bin/chromium")
#: what Chromium needs on these machines: no sandbox as root, no GPU, and no calls home (the network is closed)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
USER, PASSWORD = "alice", "correct horse battery"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(base_url: str, username: str = USER, password: str = PASSWORD) -> httpx.Client:
    client = web.client(base_url=base_url, timeout=30)
    page = client.get("/login")
    answer = client.post("/login", data={"csrf": csrf_of(page.text), "username": username, "password": password})
    assert answer.status_code == 303, answer.text
    return client


class SseReader:
    """Reads a Server-Sent Events stream in a thread: ``next_event(name, timeout)``."""

    def __init__(self, client: httpx.Client, url: str) -> None:
        self.events: queue.Queue[tuple[str, Any, float]] = queue.Queue()
        self._client = client
        self._url = url
        self._stop = threading.Event()
        self.status: int | None = None
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._opened.wait(10), "the stream did not open"

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self._url, timeout=httpx.Timeout(10, read=60)) as response:
                self.status = response.status_code
                self._opened.set()
                event, data = "message", []
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        self.events.put((event, json.loads("\n".join(data)), time.monotonic()))
                        event, data = "message", []
        except Exception:
            pass
        finally:
            self._opened.set()

    def next_event(self, name: str = "tasks", timeout: float = 10.0) -> tuple[Any, float]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {name!r} event within {timeout} s")
            try:
                event, data, at = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event == name:
                return data, at

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> tuple[Any, float]:
        """The first task of a ``tasks`` event (as a dict) for which ``predicate(row)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            rows, at = self.next_event("tasks", max(0.01, deadline - time.monotonic()))
            for row in map(unpack, rows):
                if predicate(row):
                    return row, at

    def close(self) -> None:
        self._stop.set()


def unpack(item: list[Any]) -> dict[str, Any]:
    """A task of a live event, as the page's script reads it."""
    keys = ("id", "status", "value", "value_max", "updated", "start_time", "end_time")
    row = dict(zip(keys, item[:7], strict=True))
    if len(item) > 7:
        row.update(item[7])
    return row


#: a program that reports through the library, as a user's program would, driven line by line on stdin
CLIENT_PROGRAM = r"""
import json, sys, time
import taskreport
taskreport.init(sys.argv[1], sys.argv[2], organization=sys.argv[3], project=sys.argv[4])
task = taskreport.Task.create(sys.argv[5], status="processing", value=0, value_max=100,
                              data={"step": "warming up", "nested": {"items": [1, 2, 3]}}, tags={"kind": "demo"})
taskreport.flush(10)
print(json.dumps({"id": task.wait_id(10)}), flush=True)
for line in sys.stdin:
    words = line.split()
    if not words or words[0] == "quit":
        break
    if words[0] == "value":
        task.update(value=int(words[1]))
    elif words[0] == "child":
        child = taskreport.Task.create(words[1], parent=task, status="processing", value=1)
    elif words[0] == "success":
        task.success()
    taskreport.flush(10)
    print(json.dumps({"sent": time.time()}), flush=True)
taskreport.shutdown(10)
"""


class LibraryProcess:
    """A real client of the library in another process, reporting to ``url``."""

    def __init__(self, url: str, token: str, organization: str, project: str, name: str) -> None:
        env = {k: v for k, v in os.environ.items() if (not k.startswith("TASKREPORT_") or k == "TASKREPORT_SCRYPT_N")}
        env["TASKREPORT_HOME"] = os.environ.get("TASKREPORT_HOME", "/tmp")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT_PROGRAM, url, token, organization, project, name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.task_id = self._answer()["id"]

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the library process ended (status {self.proc.poll()})"
        return dict(json.loads(line))

    def send(self, command: str) -> float:
        """Run a command; returns when its change was delivered (the PATCH answered), as ``time.time()``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return float(self._answer()["sent"])

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def chromium_or_skip() -> str:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium): the browser tests need one")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (it is in the dev extra)")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, driven by Playwright (no browser download), in a fresh profile."""
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        try:
            # launch() runs Chromium in a new, empty, temporary profile, removed when it closes
            instance = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        except Exception as exc:  # pragma: no cover - depends on the machine
            pytest.skip(f"Chromium at {executable} did not start: {exc}")
        try:
            yield instance
        finally:
            instance.close()


def screenshot(page: Any, name: str, *, full_page: bool = False) -> None:
    """Keep the docs' pictures current: ``docs/img/dashboard-NAME.png``, taken by the tests."""
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_IMG / f"dashboard-{name}.png"), full_page=full_page)
