"""Where the CLI reports to: the global options over the environment over the config file, and where each
setting came from, so that an error can say which setting to fix (never the token itself)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .._config import Config

#: the option that sets each setting on the command line
OPTIONS = {"url": "--url", "token": "--token", "organization": "--org", "project": "--project"}
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0")


class CapturedLog(logging.Handler):
    """Keeps what the library logs while a command runs, so that a failure is told in one line of ours
    rather than as log lines on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def last_message(self) -> str | None:
        for record in reversed(self.records):
            try:
                message = record.getMessage()
            except Exception:  # a record that cannot be formatted says nothing useful
                continue
            return message.removeprefix("taskreport: ")
        return None


def url_problem(url: str) -> str | None:
    """Why ``url`` can never reach a task service (``localhost:8000`` lacks its http://), or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return None
    if "://" not in url:
        host = url.split("/", 1)[0].rsplit(":", 1)[0].lower()
        loopback = host in _LOOPBACK_NAMES or host.startswith("127.")
        return f"{url!r} has no scheme: did you mean '{'http' if loopback else 'https'}://{url}'?"
    return f"{url!r}: unsupported scheme {parts.scheme!r}; use https:// (or http:// to this machine)"


@dataclasses.dataclass
class Settings:
    """The global options as given on the command line (None where not given)."""

    url: str | None = None
    token: str | None = None
    organization: str | None = None
    project: str | None = None
    log: CapturedLog | None = None
    _config: Config | None = dataclasses.field(default=None, repr=False)
    _propagate: bool = dataclasses.field(default=True, repr=False)

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in (("url", self.url), ("token", self.token), ("organization", self.organization),
                                  ("project", self.project)) if v is not None}

    @property
    def config(self) -> Config:
        """The settings as the library resolves them, with ``sources``."""
        if self._config is None:
            from .._config import resolve

            self._config = resolve(**self.given())
        return self._config

    def source(self, key: str) -> str:
        """Where a setting came from, as a user would look for it: ``--url``, ``TASKREPORT_URL``, a file."""
        where = self.config.sources.get(key, "default")
        if where == "argument":
            return OPTIONS[key]
        if where.startswith("environment (") and where.endswith(")"):
            return where[len("environment (") : -1]
        if where.startswith("config file (") and where.endswith(")"):
            return f"the config file {where[len('config file (') : -1]}"
        if where == "default":
            return "the default"
        return where

    def where(self) -> str:
        """The service or store the commands talk to, for messages."""
        config = self.config
        if config.embedded:
            return f"the embedded store {config.store_url}"
        return str(config.url)

    def describe(self, *keys: str) -> str:
        """``organization from TASKREPORT_ORG, project and url from the config file PATH``: where each setting
        that decides where a request goes came from. The token is only ever named by its source."""
        config = self.config
        by_source: dict[str, list[str]] = {}
        for key in keys or ("organization", "project", "url"):
            if key == "url" and not config.url:
                by_source.setdefault("", []).append("the embedded store, as no url is set")
                continue
            if key == "token" and not config.token:
                by_source.setdefault("", []).append("no token")
                continue
            source = self.source(key)
            by_source.setdefault("by default" if source == "the default" else f"from {source}", []).append(key)
        parts = []
        for source, names in by_source.items():
            joined = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
            parts.append(f"{joined} {source}".strip())
        return ", ".join(parts)

    def check_url(self) -> None:
        """A URL that can never work is a clear error before any request: ``localhost:8000`` lacks http://."""
        url = self.config.url
        if url is None or self.config.embedded:
            return
        problem = url_problem(url)
        if problem:
            self.fail_setting("url", problem)

    def fail_setting(self, key: str, message: str) -> None:
        """A bad setting: a usage error (exit 2) when it was a command-line option, else a plain failure."""
        if self.config.sources.get(key) == "argument":
            raise click.BadParameter(message, param_hint=f"'{OPTIONS[key]}'")
        raise click.ClickException(f"{key} {message} (from {self.source(key)})")

    def connect(self, **options: Any) -> None:
        """Point the library at the configured service for this command: one attempt per request (a person is
        waiting), no spool (a command must not leave files behind), delivery errors raised, not logged."""
        import taskreport

        self.check_url()
        if self.config.disabled:
            raise click.ClickException("reporting is disabled: TASKREPORT_DISABLED is set")
        if self.log is None:
            self.log = CapturedLog()
            logger = logging.getLogger("taskreport")
            logger.addHandler(self.log)
            self._propagate, logger.propagate = logger.propagate, False
            click.get_current_context().call_on_close(self.disconnect)
        settings: dict[str, Any] = {"spool": False, "request_retries": 0, "strict": True, "exit_timeout": 0.0}
        settings.update(options)
        taskreport.init(**self.given(), **settings)

    def disconnect(self) -> None:
        """Stop the library's client and stop capturing its log (a command's end, not the process's)."""
        import taskreport

        with contextlib.suppress(Exception):
            taskreport.shutdown(0)
        if self.log is not None:
            logger = logging.getLogger("taskreport")
            logger.removeHandler(self.log)
            logger.propagate = self._propagate
            self.log = None


def settings_of(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    if isinstance(obj, Settings):
        return obj
    # a command invoked on its own (tests, or another program embedding it): the environment and file only
    settings = Settings()
    ctx.find_root().obj = settings
    return settings
