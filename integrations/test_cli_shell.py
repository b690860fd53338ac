"""End to end: shell scripts that report through the ``taskreport`` console script, against a real server and
on the embedded store, as a cron job or a deploy script would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_fixtures import LiveServer, start_server

BIN = str(Path(sys.executable).parent)

SCRIPT = r"""
set -eu
id=$(taskreport create "nightly backup" --status processing --value-max 3 --tag env=prod --data "host=$(hostname)")
for step in 1 2 3; do
  taskreport update "$id" --value "$step" --data "step:=$step"
done
taskreport success "$id"
# a watcher that gates the next step on the task's outcome
taskreport watch "$id" && echo "deploying after $id"
failing=$(taskreport create "flaky import")
taskreport error "$failing" --message "upstream said 503"
if taskreport watch "$failing"; then echo "not reached"; else echo "watch said no: $?"; fi
taskreport list --tree
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live, stop = start_server(str(tmp_path / "server.db"))
    yield live
    stop()


@pytest.fixture(params=["http", "embedded"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if (not k.startswith("TASKREPORT_") or k == "TASKREPORT_SCRYPT_N")}
    base.update(PATH=f"{BIN}:{base.get('PATH', '')}", TASKREPORT_HOME=str(tmp_path / "home"),
                TASKREPORT_CONFIG=str(tmp_path / "config.toml"))
    if request.param == "http":
        live: LiveServer = request.getfixturevalue("server")
        base.update(TASKREPORT_URL=live.url, TASKREPORT_TOKEN=live.token, TASKREPORT_ORG=live.organization,
                    TASKREPORT_PROJECT=live.project)
    return base


def test_a_shell_script_reports_and_gates_on_watch(env: dict[str, str]) -> None:
    done = subprocess.run(["bash", "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("deploying after ") for line in lines)
    assert "watch said no: 1" in lines
    assert "not reached" not in done.stdout
    # watch's verdict on the failed task is its one line on stderr, and nothing else went there
    assert done.stderr.strip().splitlines() == [
        next(line for line in done.stderr.splitlines() if "did not succeed: flaky import" in line)
    ]
    table = lines[lines.index(next(line for line in lines if line.startswith("ID "))):]
    assert any("nightly backup" in line and "success" in line and "3/3 (100%)" in line for line in table)
    assert any("flaky import" in line and "error" in line for line in table)


def test_every_failure_is_one_line_from_the_real_script(env: dict[str, str]) -> None:
    cases = [
        (["--url", "localhost:8000", "list"], 2, "did you mean 'http://localhost:8000'?"),
        (["update", "no-such-task", "--value", "1"], 1, "no task with id 'no-such-task'"),
        (["create", "x", "--tag", "k:"], 2, "'k:' is not KEY=VALUE"),
        (["list", "--tag", ":v"], 2, "':v' is not KEY=VALUE"),
        (["list", "--limit", "abc"], 2, "'abc' is not a whole number"),
        (["flush-spool", "--timeout", "-5"], 2, "'-5' is not a number of seconds"),
        (["watch", "nope"], 1, "no task with id 'nope'"),
        (["login", "localhost:8000"], 2, "did you mean 'http://localhost:8000'?"),
    ]
    for args, code, expected in cases:
        done = subprocess.run(["taskreport", *args], env=env, capture_output=True, text=True, timeout=60,
                              check=False, stdin=subprocess.DEVNULL)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == code, (args, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("taskreport: ") and expected in lines[0], (args, done.stderr)
        assert "Traceback" not in done.stderr
