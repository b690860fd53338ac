"""End to end: a real ``taskreport serve`` process, driven over HTTP with the token it prints."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import web

TASKREPORT = Path(sys.executable).parent / "taskreport"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    if not TASKREPORT.exists():
        pytest.skip(f"no console script at {TASKREPORT}: pip install -e '.[server]'")
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if (not k.startswith("TASKREPORT_") or k == "TASKREPORT_SCRYPT_N")},
        "TASKREPORT_HOME": str(tmp_path / "home"),
        "TASKREPORT_CONFIG": str(tmp_path / "config.toml"),
        "TASKREPORT_SERVE_PORT": str(port),
        "TASKREPORT_SERVE_SWEEP_INTERVAL": "0.2",
    }
    process = subprocess.Popen(
        [str(TASKREPORT), "serve", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        token = ""
        deadline = time.monotonic() + 20
        while not token and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.strip().startswith("token:"):
                token = line.split()[1]
        assert token, f"serve printed no token; stderr: {process.stderr.read() if process.stderr else ''}"
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                if web.get(f"{url}/api/ping/").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url, token, env
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0


def test_serve_then_create_patch_list(served: tuple[str, str, dict[str, str]]) -> None:
    url, token, env = served
    tasks = f"{url}/api/local/default/tasks/"
    with web.client(headers={"Authorization": f"Token {token}"}, timeout=10) as http:
        created = http.post(tasks, json={"name": "nightly export", "status": "processing", "stale_timeout": 1})
        assert created.status_code == 201
        task = created.json()
        patched = http.patch(task["url"], json={"value": 40})
        assert patched.status_code == 200 and patched.json()["value_percent"] == 40
        listed = http.get(tasks, params={"status": "processing"}).json()
        assert [t["id"] for t in listed["results"]] == [task["id"]]
        # the server's sweeper marks it stale once it stops updating
        deadline = time.monotonic() + 5
        while http.get(task["url"]).json()["status"] != "stale" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert http.get(task["url"]).json()["status"] == "stale"
    # serve pointed this machine's config at itself: the CLI now lists from the server
    listing = subprocess.run(
        [str(TASKREPORT), "list"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert listing.returncode == 0, listing.stderr
    assert "nightly export" in listing.stdout
