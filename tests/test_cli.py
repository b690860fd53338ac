"""The ``taskreport`` command, driven with click's CliRunner and, for the console script, a real process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from server_fixtures import LiveServer

import taskreport
from taskreport.cli import main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def make_tasks() -> list[str]:
    tasks = [
        taskreport.Task.create(f"job-{i}", status=status, value=i * 10, tags={"env": "prod" if i else "dev"})
        for i, status in enumerate(["success", "error", "processing"])
    ]
    assert taskreport.flush(5)
    taskreport.shutdown()
    return [t.id for t in tasks if t.id]


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("taskreport: ")
    assert "Traceback" not in stderr
    return lines[0]


def test_list_shows_recorded_tasks_newest_first(runner: CliRunner) -> None:
    make_tasks()
    result = runner.invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "PROGRESS", "UPDATED"]
    assert [line.split()[1] for line in lines[1:]] == ["job-2", "job-1", "job-0"]
    assert "20/100 (20%)" in lines[1]


def test_list_filters_limits_and_json(runner: CliRunner) -> None:
    make_tasks()
    result = runner.invoke(main, ["list", "--status", "error", "--status", "success", "--json"])
    assert result.exit_code == 0, result.output
    assert sorted(t["name"] for t in json.loads(result.stdout)) == ["job-0", "job-1"]
    result = runner.invoke(main, ["list", "--tag", "env:prod", "--limit", "1", "--json"])
    assert [t["name"] for t in json.loads(result.stdout)] == ["job-2"]


def test_list_with_no_tasks_says_so(runner: CliRunner) -> None:
    result = runner.invoke(main, ["list"])
    assert result.exit_code == 0
    assert result.stdout == "" and "no tasks" in result.stderr


def test_get_shows_one_task(runner: CliRunner) -> None:
    ids = make_tasks()
    result = runner.invoke(main, ["get", ids[1], "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["id"], body["name"], body["status"], body["value"]) == (ids[1], "job-1", "error", 10)
    result = runner.invoke(main, ["get", ids[1]])
    assert "job-1" in result.stdout and "error" in result.stdout


def test_unknown_id_is_one_line_and_exit_1(runner: CliRunner) -> None:
    result = runner.invoke(main, ["get", "no-such-id"])
    assert result.exit_code == 1
    assert "no-such-id" in one_line_error(result.stderr)


@pytest.mark.parametrize(
    "args", [["list", "--bogus"], ["list", "--status", "done"], ["list", "--limit", "0"], ["get"], ["nope"]]
)
def test_bad_usage_is_one_line_and_exit_2(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert "--help" in one_line_error(result.stderr)


def test_bad_tag_is_one_line(runner: CliRunner) -> None:
    result = runner.invoke(main, ["list", "--tag", "novalue"])
    assert result.exit_code == 2
    assert "KEY:VALUE" in one_line_error(result.stderr)


def test_unopenable_store_is_one_line(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's directory should be")
    monkeypatch.setenv("TASKREPORT_HOME", str(blocker))
    result = runner.invoke(main, ["list"])
    assert result.exit_code == 1
    assert "store" in one_line_error(result.stderr)


def test_unreachable_service_is_one_line(runner: CliRunner) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = runner.invoke(main, ["--url", f"http://127.0.0.1:{port}", "--token", "t", "list"])
    assert result.exit_code == 1
    assert "cannot reach" in one_line_error(result.stderr)


def test_global_options_come_from_the_environment(runner: CliRunner, sqlite_server: LiveServer) -> None:
    taskreport.init(url=sqlite_server.url, token=sqlite_server.token, organization="acme", project="web")
    taskreport.Task.create("on the server").success()
    assert taskreport.flush(5)
    env = {"TASKREPORT_URL": sqlite_server.url, "TASKREPORT_TOKEN": sqlite_server.token,
           "TASKREPORT_ORG": "acme", "TASKREPORT_PROJECT": "web"}
    result = runner.invoke(main, ["list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert [t["name"] for t in json.loads(result.stdout)] == ["on the server"]
    result = runner.invoke(main, ["list", "--json"], env={**env, "TASKREPORT_TOKEN": "trk_wrong"})
    assert result.exit_code == 1
    one_line_error(result.stderr)


def test_flush_spool_with_an_empty_spool(runner: CliRunner) -> None:
    result = runner.invoke(main, ["flush-spool"])
    assert result.exit_code == 0
    assert "delivered 0" in result.stdout


def test_console_script_and_module_entry_points(isolated: Path) -> None:
    make_tasks()
    for command in ([str(Path(sys.executable).parent / "taskreport")], [sys.executable, "-m", "taskreport"]):
        done = subprocess.run([*command, "list", "--json"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert len(json.loads(done.stdout)) == 3
        done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
        assert taskreport.__version__ in done.stdout
