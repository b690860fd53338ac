"""The ``taskreport`` command, driven with click's CliRunner and, for the console script, a real process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from clihelp import one_line_error, run, server_args
from faultproxy import FaultProxy
from server_fixtures import LiveServer

import taskreport
from taskreport.cli import COMMANDS, main


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


# -- the command group: lazy subcommands, help -------------------------------------------------------------------
def test_help_lists_every_command_by_section(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for section in ("Tasks:", "Setup:", "Service:"):
        assert section in result.stdout
    listed = " ".join(result.stdout.split())
    for name, entry in COMMANDS.items():
        assert f" {name} {entry.help}" in listed


def test_registered_help_matches_each_command() -> None:
    """The group lists subcommands from their registered help, without importing them: it must not drift."""
    import click

    ctx = click.Context(main)
    for name, entry in COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command is not None, name
        assert command.get_short_help_str(200) == entry.help, name


def test_help_and_version_import_no_heavy_module(isolated: Path) -> None:
    probe = (
        "import sys\n"
        "from taskreport.cli import main\n"
        "for args in (['--help'], ['--version'], ['list', '--help'], ['watch', '--help'], ['create', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, exc.code\n"
        "heavy = ('requests', 'urllib3', 'taskreport.server', 'taskreport._store', 'taskreport._http',\n"
        "         'taskreport._local', 'uvicorn', 'starlette', 'tomlkit')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {h.split('.')[0] for h in heavy}\n"
        "             and any(m == h or m.startswith(h + '.') for h in heavy)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_an_unexpected_error_is_one_line_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import taskreport.cli._tasks as tasks

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(tasks, "build_tree", broken)
    make_tasks()
    runner = CliRunner()
    result = runner.invoke(main, ["list", "--tree"], standalone_mode=True)
    # CliRunner catches SystemExit; the group printed one line and exited 1
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "internal error: RuntimeError: something nobody expected" in line


# -- list: filters, tree, clear errors ----------------------------------------------------------------------------
def test_list_filters_by_parent_external_id_and_name(runner: CliRunner) -> None:
    parent = taskreport.Task.create("nightly", status="processing")
    children = [taskreport.Task.create(f"step {i}", parent=parent, external_id=f"ext-{i}") for i in range(3)]
    taskreport.Task.create("other", external_id="ext-1", parent=None)
    assert taskreport.flush(5)
    ids = [c.id for c in children]
    result = runner.invoke(main, ["list", "--parent", str(parent.id), "--json"])
    assert result.exit_code == 0, result.output
    assert sorted(t["id"] for t in json.loads(result.stdout)) == sorted(ids)
    result = runner.invoke(main, ["list", "--external-id", "ext-1", "--json"])
    assert sorted(t["name"] for t in json.loads(result.stdout)) == ["other", "step 1"]
    result = runner.invoke(main, ["list", "--external-id", "ext-1", "--name", "other", "--json"])
    assert [t["name"] for t in json.loads(result.stdout)] == ["other"]


def test_list_tree_shows_children_under_their_parent(runner: CliRunner) -> None:
    parent = taskreport.Task.create("nightly", status="processing")
    for i in range(3):
        taskreport.Task.create(f"step {i}", parent=parent, status="success", value=i, value_max=2)
    lonely = taskreport.Task.create("lonely", parent=None)
    assert taskreport.flush(5)
    result = runner.invoke(main, ["list", "--tree"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    names = [line.split("  ")[1].strip() if "  " in line else "" for line in lines[1:]]
    assert lines[0].split() == ["ID", "NAME", "STATUS", "PROGRESS", "UPDATED"]
    # newest first at the top level; children once, in the order they were made, under their parent
    assert lines[1].startswith(str(lonely.id))
    assert any(line.startswith(str(parent.id)) and "nightly" in line for line in lines)
    at = next(i for i, line in enumerate(lines) if line.startswith(str(parent.id)))
    under = [lines[at + k].split("  ", 1)[1].strip()[:10].strip() for k in (1, 2, 3)]
    assert under == ["├─ step 0", "├─ step 1", "└─ step 2"]
    assert sum("step 1" in line for line in lines) == 1, names
    result = runner.invoke(main, ["list", "--tree", "--json"])
    body = {t["name"]: t for t in json.loads(result.stdout)}
    assert set(body) == {"lonely", "nightly"}
    assert [c["name"] for c in body["nightly"]["children"]] == ["step 0", "step 1", "step 2"]


@pytest.mark.parametrize("tag", ["env:", ":prod", ":", "novalue"])
def test_list_tag_needs_both_parts(runner: CliRunner, tag: str) -> None:
    result = runner.invoke(main, ["list", "--tag", tag])
    assert result.exit_code == 2
    line = one_line_error(result.stderr)
    assert "--tag" in line and repr(tag) in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["list", "--limit", "abc"], "'--limit': 'abc' is not a whole number of at least 1"),
        (["list", "--limit", "1.5"], "'1.5' is not a whole number"),
        (["flush-spool", "--timeout", "-5"], "'--timeout': '-5' is not a number of seconds (0 or more)"),
        (["flush-spool", "--timeout", "nan"], "'nan' is not a number of seconds"),
        (["watch", "--interval", "0"], "'0' is not a number of seconds (more than 0)"),
    ],
)
def test_bad_numbers_are_clear(runner: CliRunner, args: list[str], expected: str) -> None:
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    line = one_line_error(result.stderr)
    assert expected in line
    assert "integer range" not in line


# -- one-line errors that say which setting to fix ------------------------------------------------------------------
def test_connection_refused_is_one_line_naming_the_url_and_its_source(runner: CliRunner) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = runner.invoke(main, ["list"], env={"TASKREPORT_URL": url, "TASKREPORT_TOKEN": "secret-token-1"})
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert line == f"taskreport: cannot reach the task service at {url}: connection refused (url from TASKREPORT_URL)"


def test_an_interactive_command_asks_the_service_once(runner: CliRunner, sqlite_server: LiveServer) -> None:
    """The library retries a direct call three times with backoff; a person at a prompt gets the answer at once."""
    proxy = FaultProxy(sqlite_server.url)
    try:
        proxy.fail(503, times=10)
        result = runner.invoke(main, [*server_args(sqlite_server, proxy.url), "list"])
        assert result.exit_code == 1
        assert "failed (503)" in one_line_error(result.stderr)
        assert len(proxy.requests()) == 1
    finally:
        proxy.close()


def test_url_without_scheme_suggests_http(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--url", "localhost:8000", "list"])
    assert result.exit_code == 2
    line = one_line_error(result.stderr)
    assert "did you mean 'http://localhost:8000'?" in line and "'--url'" in line
    result = runner.invoke(main, ["list"], env={"TASKREPORT_URL": "tasks.example.com"})
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "did you mean 'https://tasks.example.com'?" in line and "TASKREPORT_URL" in line


def test_url_from_the_config_file_is_named(runner: CliRunner, tmp_path: Path) -> None:
    config = Path(os.environ["TASKREPORT_CONFIG"])
    config.write_text('url = "localhost:8000"\n')
    result = runner.invoke(main, ["list"])
    assert result.exit_code == 1
    assert f"(from the config file {config})" in one_line_error(result.stderr)


def test_not_found_names_url_organization_project_and_sources_never_the_token(
    runner: CliRunner, sqlite_server: LiveServer
) -> None:
    env = {"TASKREPORT_URL": sqlite_server.url, "TASKREPORT_TOKEN": sqlite_server.token}
    result = runner.invoke(main, ["--org", "acme", "list"], env=env)
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert line == (
        f"taskreport: {sqlite_server.url} has no project acme/default that this token can see "
        "(organization from --org, project by default, url from TASKREPORT_URL)"
    )
    assert sqlite_server.token not in result.output
    result = runner.invoke(main, ["--org", "acme", "--project", "web", "get", "nope"], env=env)
    line = one_line_error(result.stderr)
    assert line.startswith(f"taskreport: no task with id 'nope' in project acme/web at {sqlite_server.url}")
    assert sqlite_server.token not in result.output


def test_a_refused_token_names_its_source(runner: CliRunner, sqlite_server: LiveServer) -> None:
    args = ["--url", sqlite_server.url, "--org", "acme", "--project", "web", "list"]
    result = runner.invoke(main, args, env={"TASKREPORT_TOKEN": "trk_not-a-real-token"})
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "refused the token from TASKREPORT_TOKEN" in line and "trk_not-a-real-token" not in line
    result = runner.invoke(main, args)
    assert "needs a token: run 'taskreport login'" in one_line_error(result.stderr)


def test_plain_http_to_another_host_is_refused_in_one_line(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--url", "http://tasks.example.com", "--token", "t", "list"])
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "plain HTTP" in line and "url from --url" in line


def test_console_script_errors_are_one_line(isolated: Path) -> None:
    for args, code in ((["--url", "localhost:1", "list"], 2), (["get", "nope"], 1), (["list", "--limit", "x"], 2),
                       (["nope"], 2), (["update", "x"], 2)):
        done = run(args)
        assert done.returncode == code, (args, done.stderr)
        one_line_error(done.stderr)
