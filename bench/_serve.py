"""``taskreport serve`` in its own process for benchmarks (so that it never competes with the measured
application for the GIL), and the code of an earlier revision exported for before/after runs."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the last commit of wave 1: what "before" means in the benches
WAVE1 = "336ea97"


@dataclass
class Served:
    url: str
    token: str
    db: Path
    organization: str = "local"
    project: str = "default"

    def env(self) -> dict[str, str]:
        """The environment that points the library at this server."""
        return {"TASKREPORT_URL": self.url, "TASKREPORT_TOKEN": self.token, "TASKREPORT_ORG": self.organization,
                "TASKREPORT_PROJECT": self.project}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(workdir: Path, *extra: str) -> Iterator[Served]:
    """A fresh ``taskreport serve`` on SQLite in ``workdir``, stopped on exit."""
    port = free_port()
    db = workdir / "bench.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKREPORT_")}
    env.update(TASKREPORT_HOME=str(workdir / "server-home"), TASKREPORT_CONFIG=str(workdir / "server.toml"))
    command = [sys.executable, "-c", "from taskreport.cli import main; main()", "serve", "--db", str(db), "--port",
               str(port), "--no-write-config", "--log-level", "warning", "--sweep-interval", "0", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert process.stdout is not None
        token = ""
        deadline = time.monotonic() + 60
        while not token and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.strip().startswith("token:"):
                token = line.split()[1]
        if not token:
            raise SystemExit("taskreport serve printed no token")
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/api/ping/", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        yield Served(url, token, db)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def exported(revision: str) -> Iterator[Path]:
    """The ``taskreport`` package as it was at ``revision``, in a temporary directory (for PYTHONPATH)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "taskreport"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)
