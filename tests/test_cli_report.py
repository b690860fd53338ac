"""``taskreport create``, ``update``, ``success``, ``error`` and ``cancel``, on the embedded store and over HTTP
against a real server; what they wrote is read back through the library."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from click.testing import CliRunner
from clihelp import one_line_error, point_library, run, server_args

import taskreport
from taskreport.cli import main


@pytest.fixture(params=["embedded", "http"])
def cli_args(request: pytest.FixtureRequest) -> list[str]:
    """Global options pointing the CLI at the embedded store (none) or at a real server on SQLite."""
    if request.param == "embedded":
        return []
    return server_args(request.getfixturevalue("sqlite_server"))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, args: list[str], *more: str, **kwargs: Any) -> Any:
    return runner.invoke(main, [*args, *more], **kwargs)


def read(cli_args: list[str], task_id: str) -> taskreport.TaskRecord:
    point_library(cli_args)
    try:
        return taskreport.get_task(task_id)
    finally:
        taskreport.shutdown(1)


def test_create_prints_the_id_and_the_task_is_there(runner: CliRunner, cli_args: list[str]) -> None:
    result = invoke(
        runner, cli_args, "create", "nightly backup", "--status", "processing", "--value", "2", "--value-max", "8",
        "--data", "host=db-1", "--data", "attempt:=3", "--data", "ok:=true", "--tag", "env=prod", "--tag", "team:ops",
        "--external-id", "job-42", "--stale-timeout", "60", "--max-runtime", "3600", "--queue", "nightly",
    )
    assert result.exit_code == 0, result.output
    task_id = result.stdout.strip()
    assert result.stdout == task_id + "\n" and len(task_id) >= 16
    record = read(cli_args, task_id)
    assert (record.name, record.status.value, record.value, record.value_max) == ("nightly backup", "processing", 2, 8)
    assert record.data == {"host": "db-1", "attempt": 3, "ok": True}
    assert record.tags == {"env": "prod", "team": "ops"}
    assert (record.external_id, record.stale_timeout, record.max_runtime) == ("job-42", 60, 3600)
    assert record.queue == "nightly"
    assert record.start_time is not None


def test_create_json_and_parent(runner: CliRunner, cli_args: list[str]) -> None:
    parent = invoke(runner, cli_args, "create", "parent").stdout.strip()
    result = invoke(runner, cli_args, "create", "child", "--parent", parent, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["name"], body["parent"], body["status"]) == ("child", parent, "pending")


def test_update_success_error_cancel(runner: CliRunner, cli_args: list[str]) -> None:
    ids = [invoke(runner, cli_args, "create", f"job {i}", "--data", "a=1", "--tag", "env=dev").stdout.strip()
           for i in range(3)]
    result = invoke(runner, cli_args, "update", ids[0], "--value", "5", "--value-max", "10", "--status", "processing",
                    "--data", "b:=[1, 2]", "--tag", "owner=me")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    record = read(cli_args, ids[0])
    assert (record.value, record.value_max, record.status.value, record.value_percent) == (5, 10, "processing", 50)
    # data and tags merge into what the task has
    assert record.data == {"a": "1", "b": [1, 2]}
    assert record.tags == {"env": "dev", "owner": "me"}

    assert invoke(runner, cli_args, "success", ids[0], "--data", "rows:=120").exit_code == 0
    record = read(cli_args, ids[0])
    assert record.status.value == "success" and record.end_time is not None
    assert record.data == {"a": "1", "b": [1, 2], "rows": 120}

    assert invoke(runner, cli_args, "error", ids[1], "--message", "disk full").exit_code == 0
    record = read(cli_args, ids[1])
    assert record.status.value == "error" and record.data == {"a": "1", "message": "disk full"}

    assert invoke(runner, cli_args, "cancel", ids[2]).exit_code == 0
    assert read(cli_args, ids[2]).status.value == "cancelled"


def test_unknown_id_is_one_line(runner: CliRunner, cli_args: list[str]) -> None:
    for command in (["update", "nope", "--value", "1"], ["success", "nope"], ["error", "nope"], ["cancel", "nope"]):
        result = invoke(runner, cli_args, *command)
        assert result.exit_code == 1, command
        assert "no task with id 'nope' in project" in one_line_error(result.stderr)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["create", "x", "--value", "-1"], "'--value'"),
        (["create", "x", "--value", "many"], "'--value'"),
        (["create", "x", "--status", "done"], "'--status'"),
        (["create", "x", "--tag", "env="], "'--tag'"),
        (["create", "x", "--tag", "=prod"], "'--tag'"),
        (["create", "x", "--tag", "e=x"], "'--tag'"),  # the API wants tag values of 2 characters or more
        (["create", "x", "--data", "novalue"], "'--data'"),
        (["create", "x", "--data", "n:=not json"], "'--data'"),
        (["create", "x", "--data", "n:=NaN"], "'--data'"),
        (["create", "x", "--stale-timeout", "0"], "'--stale-timeout'"),
        (["create", ""], "'NAME'"),
        (["create", "x", "--timeout", "0"], "'--timeout'"),
        (["update", "some-id"], "nothing to change"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(runner: CliRunner, args: list[str], named: str) -> None:
    result = runner.invoke(main, args)
    assert result.exit_code == 2, result.output
    assert named in one_line_error(result.stderr)


def test_create_when_the_service_is_down_fails_fast_in_one_line(runner: CliRunner) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = runner.invoke(main, ["--url", f"http://127.0.0.1:{port}", "--token", "t", "create", "x"])
    assert result.exit_code == 1
    assert one_line_error(result.stderr) == (
        f"taskreport: cannot reach the task service at http://127.0.0.1:{port}: connection refused (url from --url)"
    )


def test_create_with_a_refused_token(runner: CliRunner, sqlite_server: Any) -> None:
    args = ["--url", sqlite_server.url, "--token", "trk_wrong", "--org", "acme", "--project", "web"]
    result = runner.invoke(main, [*args, "create", "x"])
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "refused the token from --token" in line and "trk_wrong" not in line


def test_create_in_an_unknown_project(runner: CliRunner, sqlite_server: Any) -> None:
    args = ["--url", sqlite_server.url, "--token", sqlite_server.token, "--org", "acme", "--project", "nope"]
    result = runner.invoke(main, [*args, "create", "x"])
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "no project acme/nope" in line and "project from --project" in line


def test_create_with_reporting_disabled_is_one_line(runner: CliRunner) -> None:
    result = runner.invoke(main, ["create", "x"], env={"TASKREPORT_DISABLED": "1"})
    assert result.exit_code == 1
    assert "disabled" in one_line_error(result.stderr)


def test_a_shell_script_reports_through_the_console_script(sqlite_server: Any) -> None:
    """What the commands are for: a shell script reporting its progress without Python."""
    args = server_args(sqlite_server)
    created = run([*args, "create", "backup", "--status", "processing", "--value-max", "3"])
    assert created.returncode == 0, created.stderr
    task_id = created.stdout.strip()
    for value in ("1", "2", "3"):
        done = run([*args, "update", task_id, "--value", value])
        assert done.returncode == 0 and done.stdout == done.stderr == ""
    assert run([*args, "success", task_id]).returncode == 0
    record = read(args, task_id)
    assert (record.status.value, record.value, record.value_percent) == ("success", 3, 100)
