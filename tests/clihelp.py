"""Helpers for the CLI's tests: the one-line error check and the global options that point at a backend."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from server_fixtures import LiveServer

#: the console script installed beside this interpreter
TASKREPORT = str(Path(sys.executable).parent / "taskreport")


def one_line_error(stderr: str) -> str:
    """The single line a failing command printed: ``taskreport: ...``, and no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("taskreport: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def server_args(live: LiveServer, url: str | None = None) -> list[str]:
    """Global options that point the CLI at ``live`` (or at ``url`` with its credentials)."""
    return ["--url", url or live.url, "--token", live.token, "--org", live.organization, "--project", live.project]


def point_library(args: Sequence[str]) -> None:
    """Point this process's library where ``args`` (from :func:`server_args`, or none) point the CLI."""
    import taskreport

    options = dict(zip(args[::2], args[1::2], strict=True))
    taskreport.init(
        url=options.get("--url"),
        token=options.get("--token"),
        organization=options.get("--org"),
        project=options.get("--project"),
    )


def run(args: Sequence[str], env: dict[str, str] | None = None, stdin: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real console script in a subprocess, with this test's environment (its own home and config)."""
    return subprocess.run(
        [TASKREPORT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
