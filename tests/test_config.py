"""Configuration: arguments > environment > config file; project keys; the embedded default; the file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from taskreport._config import (
    DEFAULT_PROJECT,
    ENV,
    LOCAL_ORGANIZATION,
    Config,
    config_path,
    data_home,
    is_store_url,
    make_project_key,
    parse_project_key,
    read_config_file,
    resolve,
    write_config_file,
)
from taskreport._errors import ConfigurationError

# values that are not project keys (base64 decoding fails on '-'), one per source
VALUES = {
    "url": {"arg": "https://arg.example", "env": "https://env.example", "file": "https://file.example"},
    "token": {"arg": "arg-token", "env": "env-token", "file": "file-token"},
    "organization": {"arg": "arg-org", "env": "env-org", "file": "file-org"},
    "project": {"arg": "arg-proj", "env": "env-proj", "file": "file-proj"},
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def cfg_file() -> Path:
    """The config file the autouse fixture points TASKREPORT_CONFIG at."""
    return Path(os.environ["TASKREPORT_CONFIG"])


@pytest.mark.parametrize("key", sorted(VALUES))
def test_precedence_args_env_file(key: str, cfg_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = VALUES[key]
    assert getattr(resolve(), key) != values["file"]

    write_config_file({key: values["file"]})
    assert getattr(resolve(), key) == values["file"]

    monkeypatch.setenv(ENV[key], values["env"])
    assert getattr(resolve(), key) == values["env"]

    assert getattr(resolve(**{key: values["arg"]}), key) == values["arg"]

    # an explicit environ mapping replaces os.environ
    assert getattr(resolve(environ={}), key) == values["file"]
    assert getattr(resolve(environ={ENV[key]: "x-" + values["env"]}), key) == "x-" + values["env"]


def test_all_keys_from_each_source_independently(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config_file({"url": VALUES["url"]["file"], "token": VALUES["token"]["file"]})
    monkeypatch.setenv(ENV["organization"], VALUES["organization"]["env"])
    config = resolve(project=VALUES["project"]["arg"])
    assert config.url == VALUES["url"]["file"]
    assert config.token == VALUES["token"]["file"]
    assert config.organization == VALUES["organization"]["env"]
    assert config.project == VALUES["project"]["arg"]


def test_empty_env_var_does_not_override_file(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config_file({"url": "https://file.example"})
    monkeypatch.setenv("TASKREPORT_URL", "")
    assert resolve().url == "https://file.example"


def test_trailing_slash_stripped_from_url() -> None:
    assert resolve("https://tasks.example/").url == "https://tasks.example"


def test_explicit_config_file_argument(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "other.toml"
    write_config_file({"url": "https://other.example"}, other)
    write_config_file({"url": "https://default.example"})
    assert resolve(config_file=other).url == "https://other.example"
    assert resolve(config_file=str(other)).url == "https://other.example"
    assert resolve().url == "https://default.example"


# -- project keys ---------------------------------------------------------------------------------------------
def test_project_key_round_trip() -> None:
    key = make_project_key("acme", "web", "s3cr3t")
    assert parse_project_key(key) == ("acme", "web", "s3cr3t")
    # keys pasted without their '=' padding still parse
    assert parse_project_key(key.rstrip("=")) == ("acme", "web", "s3cr3t")


@pytest.mark.parametrize(
    "value",
    ["plain-token", "", "bm90IGEga2V5", make_project_key("a", "b", "c")[:-4] + "!!!!", "YS9iLw=="],  # "a/b/"
)
def test_not_a_project_key(value: str) -> None:
    assert parse_project_key(value) is None


@pytest.mark.parametrize("source", ["arg", "env", "file"])
def test_project_key_fills_org_and_project(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    key = make_project_key("acme", "web", "s3cr3t")
    if source == "arg":
        config = resolve(token=key)
    else:
        if source == "env":
            monkeypatch.setenv("TASKREPORT_TOKEN", key)
        else:
            write_config_file({"token": key})
        config = resolve()
    assert (config.organization, config.project, config.token) == ("acme", "web", "s3cr3t")


def test_explicit_org_and_project_win_over_project_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = make_project_key("acme", "web", "s3cr3t")
    config = resolve(token=key, organization="other-org")
    assert (config.organization, config.project, config.token) == ("other-org", "web", "s3cr3t")
    config = resolve(token=key, project="other-proj")
    assert (config.organization, config.project) == ("acme", "other-proj")

    monkeypatch.setenv("TASKREPORT_ORG", "env-org")
    monkeypatch.setenv("TASKREPORT_PROJECT", "env-proj")
    config = resolve(token=key)
    assert (config.organization, config.project, config.token) == ("env-org", "env-proj", "s3cr3t")
    config = resolve(token=key, organization="arg-org")
    assert (config.organization, config.project) == ("arg-org", "env-proj")


# -- the embedded default --------------------------------------------------------------------------------------
def test_no_url_means_embedded_local_default(isolated: Path) -> None:
    config = resolve()
    assert config.url is None
    assert config.embedded
    assert config.token is None
    assert config.organization == LOCAL_ORGANIZATION == "local"
    assert config.project == DEFAULT_PROJECT == "default"
    assert config.home == isolated
    assert Path(config.store_url).parent == isolated
    assert Path(config.store_url).is_relative_to(Path(os.environ["TASKREPORT_HOME"]))


def test_home_argument_moves_the_store(tmp_path: Path) -> None:
    config = resolve(home=tmp_path / "h")
    assert config.home == tmp_path / "h"
    assert Path(config.store_url).parent == tmp_path / "h"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user@db.example/tasks",
        "postgres://user@db.example/tasks",
        "sqlite:///var/lib/taskreport/tasks.db",
    ],
)
def test_database_url_counts_as_embedded_store(url: str) -> None:
    config = resolve(url)
    assert config.embedded
    assert config.store_url == url
    assert is_store_url(url)
    assert url in config.target


@pytest.mark.parametrize("url", ["https://tasks.example", "http://localhost:8000"])
def test_http_url_is_not_embedded(url: str) -> None:
    config = resolve(url)
    assert not config.embedded
    assert not is_store_url(url)
    assert config.target.startswith(url + "|")


def test_target_distinguishes_projects() -> None:
    assert resolve(project="a").target != resolve(project="b").target
    assert resolve(organization="a").target != resolve(organization="b").target
    assert resolve("https://one.example").target != resolve("https://two.example").target


# -- the config file ----------------------------------------------------------------------------------------------
def test_write_config_file_is_private(cfg_file: Path) -> None:
    assert not cfg_file.exists()
    path = write_config_file({"token": "file-token"})
    assert path == cfg_file
    assert _mode(cfg_file) == 0o600
    # rewriting a file someone made world-readable makes it private again
    cfg_file.chmod(0o644)
    write_config_file({"url": "https://x.example"})
    assert _mode(cfg_file) == 0o600
    # no temporary files left beside it
    assert sorted(p.name for p in cfg_file.parent.iterdir() if p.name.startswith(".config-")) == []


def test_write_config_file_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "config.toml"
    write_config_file({"url": "https://x.example"}, path)
    assert read_config_file(path) == {"url": "https://x.example"}


def test_write_config_file_merges_and_removes() -> None:
    write_config_file({"url": "https://x.example", "token": "t-1"})
    write_config_file({"organization": "acme"})
    assert read_config_file() == {"url": "https://x.example", "token": "t-1", "organization": "acme"}
    write_config_file({"token": "t-2", "url": None})
    assert read_config_file() == {"token": "t-2", "organization": "acme"}
    # removing a key that is not there is fine
    write_config_file({"project": None})
    assert read_config_file() == {"token": "t-2", "organization": "acme"}


@pytest.mark.parametrize("value", ['quote " and \\ backslash', "tab\tnew\nline", "\u00e9t\u00e9", "a = b # c", "\x7f"])
def test_write_config_file_round_trips_awkward_strings(value: str) -> None:
    write_config_file({"token": value})
    assert read_config_file()["token"] == value
    assert resolve().token == value


def test_write_config_file_keeps_numbers_and_booleans() -> None:
    write_config_file({"strict": True, "flush_interval": 2.5, "max_pending": 10})
    assert read_config_file() == {"strict": True, "flush_interval": 2.5, "max_pending": 10}


def test_write_config_file_round_trips_non_bmp_characters() -> None:
    write_config_file({"project": "rocket \U0001f680"})
    assert read_config_file()["project"] == "rocket \U0001f680"


@pytest.mark.parametrize("content", ["url = [unclosed", "url = 'a'\nurl = 'b'\n", "= nothing", "\x00\x01"])
def test_bad_config_file_raises_configuration_error(cfg_file: Path, content: str) -> None:
    cfg_file.write_text(content)
    with pytest.raises(ConfigurationError) as info:
        resolve()
    assert str(cfg_file) in str(info.value)
    with pytest.raises(ConfigurationError):
        write_config_file({"url": "https://x.example"})


def test_unreadable_config_path_raises_configuration_error(cfg_file: Path) -> None:
    cfg_file.mkdir(parents=True)
    with pytest.raises(ConfigurationError):
        resolve()


def test_missing_config_file_is_fine(cfg_file: Path) -> None:
    assert not cfg_file.exists()
    assert read_config_file() == {}
    assert resolve().url is None


def test_config_path_and_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert config_path() == Path(os.environ["TASKREPORT_CONFIG"])
    assert data_home() == Path(os.environ["TASKREPORT_HOME"])
    monkeypatch.delenv("TASKREPORT_CONFIG")
    monkeypatch.delenv("TASKREPORT_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    assert config_path() == tmp_path / "xdg-config" / "taskreport" / "config.toml"
    assert data_home() == tmp_path / "xdg-data" / "taskreport"
    assert resolve().home == tmp_path / "xdg-data" / "taskreport"


# -- secrets, switches, options ------------------------------------------------------------------------------------
def test_token_never_in_repr() -> None:
    config = resolve("https://tasks.example", "super-secret-token")
    assert config.token == "super-secret-token"
    assert "super-secret-token" not in repr(config)
    assert "super-secret-token" not in str(config)
    key = make_project_key("acme", "web", "another-secret")
    config = resolve("https://tasks.example", key)
    assert "another-secret" not in repr(config)
    assert key not in repr(config)
    assert "acme" in repr(config)


@pytest.mark.parametrize(
    ("value", "disabled"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("", False),
        ("false", False),
        ("no", False),
    ],
)
def test_taskreport_disabled(value: str, disabled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve().disabled is False
    monkeypatch.setenv("TASKREPORT_DISABLED", value)
    assert resolve().disabled is disabled
    # an explicit argument wins over the environment
    assert resolve(disabled=not disabled).disabled is (not disabled)


def test_allow_insecure_http_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve().allow_insecure_http is False
    monkeypatch.setenv("TASKREPORT_ALLOW_INSECURE_HTTP", "1")
    assert resolve().allow_insecure_http is True
    assert resolve(allow_insecure_http=False).allow_insecure_http is False


def test_options_and_tags() -> None:
    config = resolve(tags={"env": "prod"}, flush_interval=0.25, max_pending=5, strict=True)
    assert config.tags == {"env": "prod"}
    assert config.flush_interval == 0.25
    assert config.max_pending == 5
    assert config.strict is True
    # None means "the default"
    assert resolve(flush_interval=None).flush_interval == Config().flush_interval


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="flush_intervall"):
        resolve(flush_intervall=2)


@pytest.mark.parametrize(("option", "value"), [("flush_interval", 0), ("flush_interval", -1), ("max_pending", 0)])
def test_bad_option_values(option: str, value: float) -> None:
    with pytest.raises(ConfigurationError):
        resolve(**{option: value})


# -- writing keeps the user's file; where each setting came from ------------------------------------------------
def test_write_config_file_keeps_comments_tables_and_other_keys(cfg_file: Path) -> None:
    cfg_file.write_text(
        "# my settings\n"
        'url = "https://old.example"  # the team server\n'
        'token = "old"\n'
        "editor = 'vim'\n"
        "\n"
        "[server]\n"
        "port = 8001 # for trials\n"
        "[other.nested]\n"
        "x = [1, 2]\n"
    )
    write_config_file({"url": "https://new.example", "token": None, "organization": "acme"})
    text = cfg_file.read_text()
    assert text.startswith("# my settings\n")
    assert 'url = "https://new.example"  # the team server' in text
    assert "token" not in text
    assert "editor = 'vim'" in text and "port = 8001 # for trials" in text
    assert read_config_file() == {
        "url": "https://new.example",
        "editor": "vim",
        "organization": "acme",
        "server": {"port": 8001},
        "other": {"nested": {"x": [1, 2]}},
    }


def test_new_config_file_says_it_holds_a_token(cfg_file: Path) -> None:
    write_config_file({"token": "t"})
    assert cfg_file.read_text().splitlines()[0].startswith("#")
    assert "private" in cfg_file.read_text()


def test_sources_say_where_each_setting_came_from(cfg_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve().sources == dict.fromkeys(("url", "token", "organization", "project"), "default")
    write_config_file({"url": "https://file.example", "token": "file-token"})
    monkeypatch.setenv("TASKREPORT_ORG", "env-org")
    sources = resolve(project="arg-proj").sources
    assert sources == {
        "url": f"config file ({cfg_file})",
        "token": f"config file ({cfg_file})",
        "organization": "environment (TASKREPORT_ORG)",
        "project": "argument",
    }
    other = cfg_file.parent / "other.toml"
    write_config_file({"url": "https://other.example"}, other)
    assert resolve(config_file=other).sources["url"] == f"config file ({other})"


def test_sources_of_a_project_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKREPORT_TOKEN", make_project_key("acme", "web", "s3cr3t"))
    sources = resolve(project="mine").sources
    assert sources["token"] == "environment (TASKREPORT_TOKEN)"
    assert sources["organization"] == "project key (from environment (TASKREPORT_TOKEN))"
    assert sources["project"] == "argument"
    assert "s3cr3t" not in repr(resolve())
