"""``taskreport serve`` (bootstrap, bind checks) and ``taskreport admin``, through their click commands."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from taskreport._config import read_config_file
from taskreport._store import open_store
from taskreport.cli import _serve
from taskreport.cli._admin import admin
from taskreport.cli._serve import serve


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Stands in for uvicorn: records what would have been served."""
    calls: list[dict[str, Any]] = []

    def fake_run(app: Any, sock: Any, **options: Any) -> None:
        calls.append({"app": app, "address": sock.getsockname(), **options})
        sock.close()
        app.store.close()

    monkeypatch.setattr(_serve, "run_server", fake_run)
    return calls


def _token_valid(db: str, key: str) -> bool:
    store = open_store(db)
    try:
        with store.transaction(write=False) as tx:
            return tx.token_info(key) is not None
    finally:
        store.close()


def test_first_serve_bootstraps_and_prints_the_token_once(
    tmp_path: Path, isolated: Path, launches: list[dict[str, Any]]
) -> None:
    runner = CliRunner()
    first = runner.invoke(serve, ["--port", "0"])
    assert first.exit_code == 0, first.output
    token = next(line.split()[1] for line in first.output.splitlines() if line.strip().startswith("token:"))
    assert "password:" in first.output
    # the default database is the embedded store, so the server serves what the library wrote
    default_db = str(isolated / "taskreport.db")
    assert launches[0]["app"].settings.store_url == default_db
    assert launches[0]["address"][0] == "127.0.0.1"
    assert _token_valid(default_db, token)

    config_file = tmp_path / "config.toml"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    config = read_config_file(config_file)
    assert config == {"url": "http://127.0.0.1:0", "token": token, "organization": "local", "project": "default"}

    second = runner.invoke(serve, ["--port", "0"])
    assert second.exit_code == 0, second.output
    assert "token:" not in second.output and token not in second.output
    assert read_config_file(config_file)["token"] == token


def test_bootstrap_with_given_names(
    tmp_path: Path, launches: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "server.db")
    monkeypatch.setenv("TASKREPORT_SERVE_DB", db)
    result = CliRunner().invoke(
        serve,
        ["--port", "0", "--org", "acme", "--project", "web", "--username", "ada", "--password", "long enough"],
    )
    assert result.exit_code == 0, result.output
    assert "password:" not in result.output and "long enough" not in result.output
    config = read_config_file(tmp_path / "config.toml")
    assert (config["organization"], config["project"]) == ("acme", "web")
    store = open_store(db)
    try:
        with store.transaction(write=False) as tx:
            user = tx.authenticate_user("ada", "long enough")
            assert user is not None and tx.organization_slugs(user["id"]) == ["acme"]
            assert tx.get_scope("acme", "web") is not None
    finally:
        store.close()


def test_no_write_config_leaves_the_config_alone(tmp_path: Path, launches: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(serve, ["--port", "0", "--no-write-config"])
    assert result.exit_code == 0 and "token:" in result.output
    assert not (tmp_path / "config.toml").exists()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_plain_http_on_a_non_loopback_address_is_refused(
    host: str, launches: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = CliRunner().invoke(serve, ["--host", host, "--port", "0"])
    assert result.exit_code == 2
    assert "refusing to serve plain HTTP" in result.output and "--allow-http" in result.output
    assert launches == []
    monkeypatch.setenv("TASKREPORT_SERVE_HOST", host)
    assert CliRunner().invoke(serve, ["--port", "0"]).exit_code == 2


def test_allow_http_and_tls_permit_a_public_bind(tmp_path: Path, launches: list[dict[str, Any]]) -> None:
    allowed = CliRunner().invoke(serve, ["--host", "0.0.0.0", "--port", "0", "--allow-http"])
    assert allowed.exit_code == 0, allowed.output
    assert launches[-1]["address"][0] == "0.0.0.0"
    # with a wildcard bind, links in responses follow each request's Host header, but deliveries use the
    # bound address: a Host header is anyone's to choose
    app = launches[-1]["app"]
    assert app.settings.base_url is None
    port = launches[-1]["address"][1]
    assert app.settings.bind_url == app.delivery_base() == f"http://127.0.0.1:{port}"
    assert "--base-url" in allowed.output
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    tls = CliRunner().invoke(
        serve, ["--host", "0.0.0.0", "--port", "0", "--certfile", str(cert), "--keyfile", str(key)]
    )
    assert tls.exit_code == 0, tls.output
    assert launches[-1]["ssl_certfile"] == str(cert) and launches[-1]["ssl_keyfile"] == str(key)
    only_key = CliRunner().invoke(serve, ["--port", "0", "--keyfile", str(key)])
    assert only_key.exit_code == 2 and "--keyfile needs --certfile" in only_key.output


def test_invalid_rate_limit_is_a_usage_error(launches: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(serve, ["--port", "0", "--rate-limit", "lots"])
    assert result.exit_code == 2 and "--rate-limit" in result.output
    ok = CliRunner().invoke(serve, ["--port", "0", "--rate-limit", "10/minute"])
    assert ok.exit_code == 0
    limit = launches[-1]["app"].settings.rate_limit
    assert (limit.requests, limit.period) == (10, 60.0)


def test_admin_commands(tmp_path: Path) -> None:
    db = str(tmp_path / "admin.db")
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> str:
        result = runner.invoke(admin, ["--db", db, *args], input=input)
        assert result.exit_code == 0, result.output
        return result.output

    assert "acme/web is ready" in run("create-project", "acme", "web")
    assert "created user 'ada'" in run("create-user", "ada", "--org", "acme", input="long enough\nlong enough\n")
    key = run("create-token", "acme", "--user", "ada", "--name", "ci").strip()
    assert key.startswith("trk_") and _token_valid(db, key)

    listing = run("list-tokens")
    assert "acme" in listing and "ci" in listing and key[:10] in listing and key not in listing

    rotated = run("rotate-token", "1").strip()
    assert rotated != key and _token_valid(db, rotated) and not _token_valid(db, key)
    run("revoke-token", "2")
    assert not _token_valid(db, rotated)
    assert run("list-tokens", "--org", "other").count("\n") == 1

    missing = runner.invoke(admin, ["--db", db, "create-token", "acme", "--user", "nobody"])
    assert missing.exit_code == 1 and "no user 'nobody'" in missing.output
    short = runner.invoke(admin, ["--db", db, "create-user", "bob", "--org", "acme", "--password", "short"])
    assert short.exit_code == 1 and "at least 8" in short.output
    gone = runner.invoke(admin, ["--db", db, "rotate-token", "99"])
    assert gone.exit_code == 1 and "no active token" in gone.output


def test_serve_without_the_server_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "taskreport.server" or m.startswith("taskreport.server.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = CliRunner().invoke(serve, ["--port", "0"])
    assert result.exit_code == 1
    assert "pip install 'taskreport[server]'" in result.output


def test_webhook_and_email_limits_are_options(launches: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    default = CliRunner().invoke(serve, ["--port", "0"])
    assert default.exit_code == 0, default.output
    settings = launches[-1]["app"].settings
    assert settings.allow_private_webhooks is False and settings.email_domains is None
    given = CliRunner().invoke(
        serve, ["--port", "0", "--allow-private-webhooks", "--email-domains", "Example.com, ops.example.org"]
    )
    assert given.exit_code == 0, given.output
    settings = launches[-1]["app"].settings
    assert settings.allow_private_webhooks is True
    assert settings.email_domains == {"example.com", "ops.example.org"}
    monkeypatch.setenv("TASKREPORT_SERVE_ALLOW_PRIVATE_WEBHOOKS", "1")
    monkeypatch.setenv("TASKREPORT_SERVE_EMAIL_DOMAINS", "example.net")
    assert CliRunner().invoke(serve, ["--port", "0"]).exit_code == 0
    settings = launches[-1]["app"].settings
    assert settings.allow_private_webhooks is True and settings.email_domains == {"example.net"}
    assert CliRunner().invoke(serve, ["--port", "0", "--email-domains", " , "]).exit_code == 2


def test_login_rate_limit_option(launches: list[dict[str, Any]]) -> None:
    assert CliRunner().invoke(serve, ["--port", "0"]).exit_code == 0
    limit = launches[-1]["app"].settings.login_rate_limit
    assert (limit.requests, limit.period) == (10, 60.0)
    assert CliRunner().invoke(serve, ["--port", "0", "--login-rate-limit", "3/s"]).exit_code == 0
    limit = launches[-1]["app"].settings.login_rate_limit
    assert (limit.requests, limit.period) == (3, 1.0)
    assert CliRunner().invoke(serve, ["--port", "0", "--login-rate-limit", "off"]).exit_code == 0
    assert launches[-1]["app"].settings.login_rate_limit is None
    bad = CliRunner().invoke(serve, ["--port", "0", "--login-rate-limit", "lots"])
    assert bad.exit_code == 2 and "--login-rate-limit" in bad.output


# -- a newcomer's hour (issue 12): one line for every mistake, nothing changed behind the user's back ---------
def one_line(result: Any) -> str:
    """The single line a failing command printed on stderr (and nothing on stdout)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--port", "99999"], "'--port': 99999 is not in the range 0<=x<=65535"),
        (["--port", "-1"], "'--port'"),
        (["--sweep-interval", "-3"], "'--sweep-interval': -3.0 is not in the range x>=0"),
        (["--delivery-attempts", "0"], "'--delivery-attempts'"),
        (["--read-timeout", "0"], "'--read-timeout'"),
        (["--max-batch-ops", "0"], "'--max-batch-ops'"),
    ],
)
def test_bad_serve_options_are_one_line(launches: list[dict[str, Any]], args: list[str], needle: str) -> None:
    from taskreport.cli import main

    result = CliRunner().invoke(main, ["serve", *args])
    assert result.exit_code == 2 and needle in one_line(result)
    assert launches == []


def test_a_busy_port_names_the_address_and_the_way_out(launches: list[dict[str, Any]]) -> None:
    from taskreport.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--port", str(port)])
    line = one_line(result)
    assert result.exit_code == 1
    assert f"127.0.0.1:{port} is already in use" in line and "--port" in line
    assert launches == []


def test_serve_options_reach_the_settings(launches: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(serve, ["--port", "0", "--read-timeout", "2.5", "--max-batch-ops", "50"])
    assert result.exit_code == 0, result.output
    settings = launches[-1]["app"].settings
    assert (settings.read_timeout, settings.max_batch_ops) == (2.5, 50)


def test_serve_leaves_a_config_pointing_elsewhere_alone(tmp_path: Path, launches: list[dict[str, Any]]) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text('url = "https://tasks.example.com"\ntoken = "trk_theirs"\n')
    first = CliRunner().invoke(serve, ["--port", "0", "--db", str(tmp_path / "trial.db")])
    assert first.exit_code == 0, first.output
    assert read_config_file(config_file) == {"url": "https://tasks.example.com", "token": "trk_theirs"}
    assert "points at https://tasks.example.com: left as it is" in first.output and "--write-config" in first.output
    # asked explicitly, it repoints
    second = CliRunner().invoke(serve, ["--port", "0", "--db", str(tmp_path / "other.db"), "--write-config"])
    assert second.exit_code == 0, second.output
    token = next(line.split()[1] for line in second.output.splitlines() if line.strip().startswith("token:"))
    assert read_config_file(config_file)["token"] == token
    # a config that already points here (a new database for the same server) is brought up to date
    third = CliRunner().invoke(serve, ["--port", "0", "--db", str(tmp_path / "third.db")])
    token = next(line.split()[1] for line in third.output.splitlines() if line.strip().startswith("token:"))
    assert read_config_file(config_file)["token"] == token


def _admin(db: str, *args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(admin, ["--db", db, *args], input=input)


def test_revoking_an_unknown_or_revoked_token_fails(tmp_path: Path) -> None:
    db = str(tmp_path / "admin.db")
    assert _admin(db, "create-project", "acme").exit_code == 0
    assert _admin(db, "create-token", "acme").exit_code == 0
    unknown = _admin(db, "revoke-token", "9999")
    assert unknown.exit_code == 1 and "no active token with id 9999" in unknown.output
    assert _admin(db, "revoke-token", "1").exit_code == 0
    twice = _admin(db, "revoke-token", "1")
    assert twice.exit_code == 1 and "no active token with id 1" in twice.output
    huge = _admin(db, "revoke-token", str(2**70))
    assert huge.exit_code == 1 and "no active token" in huge.output


def test_tokens_and_users_need_an_existing_organization(tmp_path: Path) -> None:
    db = str(tmp_path / "admin.db")
    token = _admin(db, "create-token", "nosuchorg")
    user = _admin(db, "create-user", "ada", "--org", "nosuchorg", "--password", "long enough")
    for result in (token, user):
        assert result.exit_code == 1
        assert "no organization 'nosuchorg'" in result.output
        assert "taskreport admin create-project nosuchorg" in result.output
    store = open_store(db)
    try:
        with store.transaction(write=False) as tx:
            assert tx.list_projects() == [] and tx.list_tokens() == []
    finally:
        store.close()


def test_list_tokens_columns_are_aligned(tmp_path: Path) -> None:
    db = str(tmp_path / "admin.db")
    for org in ("a", "a-much-longer-organization-name"):
        assert _admin(db, "create-project", org).exit_code == 0
    for org, name in (("a", ""), ("a-much-longer-organization-name", "a rather long token name"), ("a", "ci")):
        assert _admin(db, "create-token", org, "--name", name).exit_code == 0
    assert _admin(db, "revoke-token", "3").exit_code == 0
    header, *rows = _admin(db, "list-tokens").output.splitlines()
    assert len(rows) == 3
    for column in ("ORGANIZATION", "PREFIX", "NAME", "CREATED", "REVOKED"):
        start = header.index(column)
        for row in rows:
            assert row[start - 2 : start] == "  " and row[start] != " ", (column, header, row)
    assert rows[2].split()[-2:] != ["-"]  # the revoked one shows when


def test_create_user_reads_the_password_from_a_pipe(tmp_path: Path) -> None:
    db = str(tmp_path / "admin.db")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "taskreport", "admin", "--db", db]
    made = subprocess.run([*command, "create-project", "acme"], capture_output=True, text=True, env=env, timeout=60)
    assert made.returncode == 0, made.stderr
    piped = subprocess.run(
        [*command, "create-user", "ada", "--org", "acme"],
        input="long enough password\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == "" and "created user 'ada'" in piped.stdout  # no GetPassWarning, no prompt
    store = open_store(db)
    try:
        with store.transaction(write=False) as tx:
            assert tx.authenticate_user("ada", "long enough password") is not None
    finally:
        store.close()
    empty = subprocess.run(
        [*command, "create-user", "bob", "--org", "acme"], input="", capture_output=True, text=True, env=env, timeout=60
    )
    assert empty.returncode == 2 and "no password" in empty.stderr and "Traceback" not in empty.stderr


def test_webhook_secret_is_shown_and_rotated(tmp_path: Path) -> None:
    db = str(tmp_path / "admin.db")
    assert _admin(db, "create-project", "acme", "web").exit_code == 0
    shown = _admin(db, "webhook-secret", "acme", "web").output.strip()
    assert shown.startswith("whsec_") and _admin(db, "webhook-secret", "acme", "web").output.strip() == shown
    rotated = _admin(db, "webhook-secret", "acme", "web", "--rotate").output.strip()
    assert rotated.startswith("whsec_") and rotated != shown
    missing = _admin(db, "webhook-secret", "acme", "nope")
    assert missing.exit_code == 1 and "create-project acme nope" in missing.output
