"""Where taskreport reports to, resolved from arguments, then the environment, then the config file."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._errors import ConfigurationError


def _tomllib() -> Any:
    # imported when a config file is read, not with the package
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    return tomllib

LOCAL_ORGANIZATION = "local"
DEFAULT_PROJECT = "default"
#: config-file and environment keys, in the order they are written
FILE_KEYS = ("url", "token", "organization", "project")
ENV = {
    "url": "TASKREPORT_URL",
    "token": "TASKREPORT_TOKEN",
    "organization": "TASKREPORT_ORG",
    "project": "TASKREPORT_PROJECT",
}
_DB_SCHEMES = ("sqlite://", "postgresql://", "postgres://")

BeforeCreate = Callable[[dict[str, Any]], "dict[str, Any] | None"]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def config_path() -> Path:
    """``$TASKREPORT_CONFIG``, else ``$XDG_CONFIG_HOME/taskreport/config.toml`` (``~/.config`` by default)."""
    explicit = os.environ.get("TASKREPORT_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "taskreport" / "config.toml"


def data_home() -> Path:
    """``$TASKREPORT_HOME``, else the user's data directory: where the embedded store and the spool live."""
    explicit = os.environ.get("TASKREPORT_HOME")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32":  # pragma: no cover - platform specific
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
    elif sys.platform == "darwin":  # pragma: no cover - platform specific
        base = os.path.expanduser("~/Library/Application Support")
    else:
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "taskreport"


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return {}  # the parser is not even imported: most processes have no config file
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc}") from None
    toml = _tomllib()
    try:
        values: dict[str, Any] = toml.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, toml.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc}") from None
    return values


def write_config_file(values: Mapping[str, Any], path: Path | None = None) -> Path:
    """Set ``values`` in the config file (a value of None removes the key), keeping everything else in it:
    the user's other keys, tables and comments. The file is replaced atomically, readable by its owner only.
    """
    import tomlkit  # only when writing: reading uses the standard library's parser
    from tomlkit.exceptions import TOMLKitError

    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc}") from None
    # the standard parser first: the file must be valid TOML for the library, not only for tomlkit
    if text is not None:
        try:
            _tomllib().loads(text)
            document = tomlkit.parse(text)
        except (ValueError, TOMLKitError) as exc:
            raise ConfigurationError(f"cannot read config file {path}: {exc}") from None
    else:
        document = tomlkit.document()
        document.add(tomlkit.comment("taskreport's settings; it holds an API token: keep it private"))
    for key, value in values.items():
        if value is None:
            if key in document:
                del document[key]
        else:
            document[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".toml")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(tomlkit.dumps(document))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def parse_project_key(key: str) -> tuple[str, str, str] | None:
    """``(organization, project, token)`` from a project key (base64 of ``org/project/token``), else None."""
    try:
        raw = base64.b64decode(key + "=" * (-len(key) % 4), validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    parts = raw.split("/")
    if len(parts) != 3 or not all(parts):
        return None
    org, project, token = parts
    return org, project, token


def make_project_key(organization: str, project: str, token: str) -> str:
    return base64.b64encode(f"{organization}/{project}/{token}".encode()).decode()


def is_store_url(url: str | None) -> bool:
    return url is None or url.startswith(_DB_SCHEMES)


@dataclasses.dataclass
class Config:
    """Everything a client needs. The token never appears in the repr."""

    url: str | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    organization: str = LOCAL_ORGANIZATION
    project: str = DEFAULT_PROJECT
    home: Path = dataclasses.field(default_factory=data_home)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    strict: bool = False
    disabled: bool = False
    flush_interval: float = 1.0
    max_pending: int = 10_000
    exit_timeout: float = 5.0
    request_timeout: float = 10.0
    #: attempts after the first for direct calls (get, list, ...); a CLI that must answer fast passes 0
    request_retries: int = 3
    allow_insecure_http: bool = False
    before_create: BeforeCreate | None = None
    spool: bool = True
    #: where url, token, organization and project came from, for messages (see :func:`resolve`)
    sources: dict[str, str] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def embedded(self) -> bool:
        """True when tasks go straight into a store rather than over HTTP."""
        return is_store_url(self.url)

    @property
    def store_url(self) -> str:
        if self.url is not None and is_store_url(self.url):
            return self.url
        return str(self.home / "taskreport.db")

    @property
    def target(self) -> str:
        """Identifies where tasks go, so a spool is only delivered to the place it was meant for."""
        where = self.url if self.url and not self.embedded else self.store_url
        return f"{where}|{self.organization}|{self.project}"


def pick_settings(
    given: Mapping[str, Any], env: Mapping[str, str], file_values: Mapping[str, Any], file_path: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    """url, token, organization and project from the arguments, the environment and the config file's values,
    and where each came from. A project key as the token names the organization and project, unless an
    argument or the environment names them outright."""
    chosen: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in FILE_KEYS:
        if given.get(key) is not None:
            chosen[key], sources[key] = given[key], "argument"
        elif env.get(ENV[key]):
            chosen[key], sources[key] = env[ENV[key]], f"environment ({ENV[key]})"
        elif file_values.get(key) not in (None, ""):
            chosen[key], sources[key] = file_values[key], f"config file ({file_path})"
        else:
            chosen[key], sources[key] = None, "default"
    if chosen["token"]:
        decoded = parse_project_key(str(chosen["token"]))
        if decoded:
            org, proj, chosen["token"] = decoded
            for key, value in (("organization", org), ("project", proj)):
                if given.get(key) is None and not env.get(ENV[key]):
                    chosen[key], sources[key] = value, f"project key (from {sources['token']})"
    return chosen, sources


def resolve(
    url: str | None = None,
    token: str | None = None,
    *,
    organization: str | None = None,
    project: str | None = None,
    tags: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> Config:
    """Arguments win over ``TASKREPORT_*`` variables, which win over the config file.

    ``Config.sources`` says where each of url, token, organization and project came from: ``argument``,
    ``environment (TASKREPORT_URL)``, ``config file (PATH)``, ``project key (from ...)`` or ``default``.
    """
    env = os.environ if environ is None else environ
    file_path = Path(config_file) if config_file else config_path()
    file_values = read_config_file(file_path)
    given = {"url": url, "token": token, "organization": organization, "project": project}
    chosen, sources = pick_settings(given, env, file_values, file_path)
    if chosen["url"]:
        chosen["url"] = str(chosen["url"]).rstrip("/")
    if options.get("disabled") is None:
        options["disabled"] = _truthy(env.get("TASKREPORT_DISABLED"))
    if options.get("allow_insecure_http") is None:
        options["allow_insecure_http"] = _truthy(env.get("TASKREPORT_ALLOW_INSECURE_HTTP"))
    options = {k: v for k, v in options.items() if v is not None}
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"init() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    home_path = (
        Path(home).expanduser()
        if home
        else (Path(env["TASKREPORT_HOME"]).expanduser() if env.get("TASKREPORT_HOME") else data_home())
    )
    config = Config(
        url=chosen["url"] or None,
        token=chosen["token"] or None,
        organization=chosen["organization"] or LOCAL_ORGANIZATION,
        project=chosen["project"] or DEFAULT_PROJECT,
        home=home_path,
        tags=dict(tags or {}),
        sources=sources,
        **options,
    )
    if config.flush_interval <= 0:
        raise ConfigurationError("flush_interval must be positive")
    if config.max_pending < 1:
        raise ConfigurationError("max_pending must be at least 1")
    return config
