"""``taskreport login``, ``logout``, ``configure`` and ``config show`` against a real server; the config file
keeps what the user wrote in it, is private, and the token is never printed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from clihelp import one_line_error, run
from server_fixtures import LiveServer

import taskreport
from taskreport._config import make_project_key, read_config_file
from taskreport.cli import main
from taskreport.cli._account import mask

PASSWORD = "correct horse battery"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def config_file() -> Path:
    return Path(os.environ["TASKREPORT_CONFIG"])


@pytest.fixture
def server(sqlite_server: LiveServer) -> LiveServer:
    sqlite_server.create_user("ada", PASSWORD)
    return sqlite_server


def login(runner: CliRunner, *args: str, password: str = PASSWORD) -> object:
    return runner.invoke(main, ["login", *args, "--username", "ada", "--password-stdin"], input=password + "\n")


def test_login_saves_a_working_token_privately(runner: CliRunner, server: LiveServer, config_file: Path) -> None:
    result = login(runner, server.url, "--project", "web")
    assert result.exit_code == 0, result.output
    assert f"Logged in to {server.url} as ada (organization acme, project web)." in result.stdout
    saved = read_config_file()
    assert saved["url"] == server.url and saved["organization"] == "acme" and saved["project"] == "web"
    assert saved["token"].startswith("trk_")
    assert saved["token"] not in result.output and PASSWORD not in result.output
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    # the saved settings work: the CLI and the library report there now
    created = runner.invoke(main, ["create", "after login"])
    assert created.exit_code == 0, created.output
    listed = runner.invoke(main, ["list", "--json"])
    assert [t["name"] for t in json.loads(listed.stdout)] == ["after login"]


def test_login_keeps_the_rest_of_the_config_file(runner: CliRunner, server: LiveServer, config_file: Path) -> None:
    config_file.write_text('# mine\nproject = "web"  # the web team\n\n[server]\nport = 8001\n')
    result = login(runner, server.url)
    assert result.exit_code == 0, result.output
    text = config_file.read_text()
    assert text.startswith("# mine\n")
    assert 'project = "web"  # the web team' in text and "[server]\nport = 8001" in text


def test_login_url_from_the_settings(runner: CliRunner, server: LiveServer) -> None:
    result = runner.invoke(main, ["--url", server.url, "login", "-u", "ada", "--password-stdin", "--project", "web"],
                           input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    # again, with the url and project saved by the first login
    result = runner.invoke(main, ["login", "-u", "ada", "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert f"Logged in to {server.url} as ada (organization acme, project web)." in result.stdout
    result = runner.invoke(main, ["login"], env={"TASKREPORT_CONFIG": os.environ["TASKREPORT_CONFIG"] + ".none"})
    assert result.exit_code == 2
    assert "give the task service's URL" in one_line_error(result.stderr)


def test_login_to_a_missing_default_project_saves_and_says_so(runner: CliRunner, server: LiveServer) -> None:
    result = login(runner, server.url)
    assert result.exit_code == 0, result.output
    assert "has no project 'default'" in result.stderr and "configure --project" in result.stderr
    assert read_config_file()["organization"] == "acme"


@pytest.mark.parametrize(
    ("args", "password", "expected"),
    [
        ([], "wrong password", "refused the login: "),
        (["--org", "other"], PASSWORD, "'ada' is not in organization 'other' (theirs: acme)"),
        (["--project", "nope"], PASSWORD, "has no project 'nope'"),
    ],
)
def test_login_failures_are_one_line_and_save_nothing(
    runner: CliRunner, server: LiveServer, config_file: Path, args: list[str], password: str, expected: str
) -> None:
    result = login(runner, server.url, *args, password=password)
    assert result.exit_code in (1, 2)
    assert expected in one_line_error(result.stderr)
    assert not config_file.exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("localhost:8000", "did you mean 'http://localhost:8000'?"),
        ("http://tasks.example.com", "refusing to send a password over plain HTTP"),
        ("http://127.0.0.1:9", "cannot reach the task service at http://127.0.0.1:9: connection refused"),
    ],
)
def test_login_to_a_bad_url_is_one_line(runner: CliRunner, url: str, expected: str) -> None:
    result = login(runner, url)
    assert result.exit_code in (1, 2)
    assert expected in one_line_error(result.stderr)


def test_login_without_a_terminal_or_password_stdin_says_how(runner: CliRunner, server: LiveServer) -> None:
    result = runner.invoke(main, ["login", server.url, "-u", "ada"])
    assert result.exit_code == 2
    assert "--password-stdin" in one_line_error(result.stderr)
    result = runner.invoke(main, ["login", server.url])
    assert "--username" in one_line_error(result.stderr)


def test_logout_removes_only_the_token(runner: CliRunner, server: LiveServer, config_file: Path) -> None:
    assert login(runner, server.url, "--project", "web").exit_code == 0
    result = runner.invoke(main, ["logout"])
    assert result.exit_code == 0
    assert f"Removed the token from {config_file}." in result.stdout
    assert read_config_file() == {"url": server.url, "organization": "acme", "project": "web"}
    result = runner.invoke(main, ["logout"])
    assert result.exit_code == 0 and "no token saved" in result.stderr
    result = runner.invoke(main, ["list"])
    assert "needs a token: run 'taskreport login'" in one_line_error(result.stderr)


def test_configure_sets_and_unsets_keeping_comments(runner: CliRunner, config_file: Path) -> None:
    config_file.write_text("# keep me\ncolor = true # mine\n")
    result = runner.invoke(main, ["configure", "--url", "https://tasks.example.com/", "--org", "acme",
                                  "--project", "web", "--token-stdin"], input="trk_abcdefghijklmnopqrstuvwxyz\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"Saved url, organization, project, token to {config_file}."
    assert "trk_abcdefghijklmnopqrstuvwxyz" not in result.output
    text = config_file.read_text()
    assert text.startswith("# keep me\ncolor = true # mine\n")
    assert read_config_file() == {"color": True, "url": "https://tasks.example.com", "organization": "acme",
                                  "project": "web", "token": "trk_abcdefghijklmnopqrstuvwxyz"}
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    result = runner.invoke(main, ["configure", "--unset", "token", "--unset", "url"])
    assert result.exit_code == 0, result.output
    assert read_config_file() == {"color": True, "organization": "acme", "project": "web"}
    result = runner.invoke(main, ["configure", "--org", "acme"])
    assert "Nothing changed" in result.stdout


def test_configure_refuses_a_url_without_scheme_and_needs_something(runner: CliRunner, config_file: Path) -> None:
    result = runner.invoke(main, ["configure", "--url", "localhost:8000"])
    assert result.exit_code == 2
    assert "did you mean 'http://localhost:8000'?" in one_line_error(result.stderr)
    result = runner.invoke(main, ["configure"])
    assert result.exit_code == 2
    assert "nothing to set" in one_line_error(result.stderr)
    assert not config_file.exists()


def test_configure_warns_when_the_environment_wins(runner: CliRunner) -> None:
    result = runner.invoke(main, ["configure", "--project", "web"], env={"TASKREPORT_PROJECT": "other"})
    assert result.exit_code == 0
    assert "TASKREPORT_PROJECT is set and wins over the config file's project" in result.stderr


def test_config_show_masks_the_token_and_names_sources(
    runner: CliRunner, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "trk_" + "s" * 30 + "WXYZ"
    runner.invoke(main, ["configure", "--url", "https://tasks.example.com", "--token-stdin"], input=token + "\n")
    monkeypatch.setenv("TASKREPORT_ORG", "acme")
    result = runner.invoke(main, ["--project", "web", "config", "show"])
    assert result.exit_code == 0, result.output
    assert token not in result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0] == ["config", "file", str(config_file)]
    assert lines[1:] == [
        ["url", "https://tasks.example.com", "config", "file"],
        ["organization", "acme", "TASKREPORT_ORG"],
        ["project", "web", "--project"],
        ["token", "trk_…WXYZ", "config", "file"],
    ]
    # 'config' alone shows the same
    assert runner.invoke(main, ["--project", "web", "config"]).stdout == result.stdout
    body = json.loads(runner.invoke(main, ["config", "show", "--json"]).stdout)
    assert body["token"] == {"value": "trk_…WXYZ", "source": "config file"}
    assert body["project"] == {"value": "default", "source": "default"}
    assert token not in json.dumps(body)


def test_config_show_of_a_project_key(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKREPORT_TOKEN", make_project_key("acme", "web", "trk_" + "k" * 40))
    result = runner.invoke(main, ["config", "show", "--json"])
    body = json.loads(result.stdout)
    assert body["organization"] == {"value": "acme", "source": "project key (from environment (TASKREPORT_TOKEN))"}
    assert "k" * 20 not in result.stdout


def test_config_show_embedded(runner: CliRunner, isolated: Path) -> None:
    result = runner.invoke(main, ["config"])
    assert result.exit_code == 0
    assert f"(none: the embedded store {isolated / 'taskreport.db'})" in result.stdout
    assert "(not there yet)" in result.stdout


@pytest.mark.parametrize(("token", "shown"), [(None, "-"), ("short", "****"), ("trk_0123456789abcdef", "trk_…cdef"),
                                              ("0123456789abcdefghij", "…ghij")])
def test_mask(token: str | None, shown: str) -> None:
    assert mask(token) == shown


def test_broken_config_file_is_one_line(runner: CliRunner, config_file: Path) -> None:
    config_file.write_text("url = [unclosed\n")
    for args in (["list"], ["config"], ["configure", "--org", "x"], ["create", "x"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1, args
        assert str(config_file) in one_line_error(result.stderr)


def test_login_through_the_console_script(server: LiveServer, config_file: Path) -> None:
    done = run(["login", server.url, "-u", "ada", "--password-stdin", "--project", "web"], stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    token = read_config_file()["token"]
    assert token not in done.stdout + done.stderr
    shown = run(["config", "show"])
    assert "trk_…" + token[-4:] in shown.stdout and token not in shown.stdout
    taskreport.init()
    assert taskreport.get_client().config.url == server.url
