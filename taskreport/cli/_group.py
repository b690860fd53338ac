"""Click groups for ``taskreport``: subcommands loaded only when they run, and every failure turned into one
line on stderr with a non-zero exit (never a traceback)."""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import click

from .._errors import (
    ConfigurationError,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    TaskReportError,
    TransportError,
    Unauthorized,
    ValidationError,
)
from ._settings import Settings, settings_of


class Lazy(NamedTuple):
    """A subcommand known by where it lives: ``module:attribute``, its one-line help, and its section."""

    target: str
    help: str
    section: str = "Commands"


def _fail(message: str, code: int) -> None:
    click.echo(f"taskreport: {message}", err=True)
    sys.exit(code)


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def transport_reason(exc: BaseException) -> str:
    """Why a request could not be made, in a few words: ``connection refused``, ``timed out``, ..."""
    text = str(exc)
    match = _ERRNO.search(text)
    if match:
        reason = match.group(1).strip().rstrip(".")
        return reason[:1].lower() + reason[1:]
    lowered = text.lower()
    for needle, reason in (
        ("timed out", "timed out"),
        ("timeout", "timed out"),
        ("certificate verify failed", "TLS certificate verify failed"),
        ("sslerror", "TLS error"),
        ("remotedisconnected", "the connection was closed without an answer"),
        ("connection aborted", "the connection was closed without an answer"),
        ("connection reset", "connection reset"),
    ):
        if needle in lowered:
            return reason
    # "METHOD url: Kind: detail" from the HTTP transport, "store path: Kind: detail" from the embedded one
    tail = text.split(": ", 2)[-1] if text.count(": ") >= 2 else text
    return tail[:200]


def explain(exc: TaskReportError, settings: Settings) -> str:
    """One line for an error of the library, naming the settings that decide it and where they came from."""
    try:
        config = settings.config
    except TaskReportError:  # the config file itself is broken: the error says so
        return str(exc)
    detail = exc.detail
    if isinstance(exc, TransportError):
        if config.embedded:
            return f"cannot use {settings.where()}: {transport_reason(exc)}"
        return (
            f"cannot reach the task service at {config.url}: {transport_reason(exc)} "
            f"(url from {settings.source('url')})"
        )
    if isinstance(exc, Unauthorized):
        if not config.token:
            return (
                f"the task service at {config.url} needs a token: run 'taskreport login', give --token or "
                "set TASKREPORT_TOKEN"
            )
        return f"the task service at {config.url} refused the token from {settings.source('token')}: {detail}"
    if isinstance(exc, Forbidden):
        return f"not allowed: {detail} ({settings.describe('url', 'organization', 'project', 'token')})"
    if isinstance(exc, NotFound):
        return (
            f"{settings.where()} has no project {config.organization}/{config.project} that this token can see "
            f"({settings.describe('organization', 'project', 'url')})"
        )
    if isinstance(exc, RateLimited):
        wait = f"; retry in {exc.retry_after:.0f} s" if exc.retry_after is not None else ""
        return f"the task service at {config.url} is limiting requests{wait}"
    if isinstance(exc, ServerError):
        return f"the task service at {config.url} failed ({exc.status_code}): {detail}"
    if isinstance(exc, ConfigurationError):
        return f"{exc} ({settings.describe('url')})" if config.url else str(exc)
    return str(exc)


class ReportingGroup(click.Group):
    """Runs standalone as one-line errors: usage errors exit 2, every other failure 1, Ctrl-C 130."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else (prog_name or "taskreport")
            _fail(f"{exc.format_message()} (see '{where} --help')", exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort as exc:
            # click turns Ctrl-C into Abort; a shell reports it as 130
            if isinstance(exc.__context__, KeyboardInterrupt):
                _fail("interrupted", 130)
            _fail("aborted", 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:
            # `taskreport list | head`: the reader left; nothing more to say, and nothing to say it to
            sys.stderr.close()
            os._exit(141)
        except Exception as exc:
            if os.environ.get("TASKREPORT_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (TASKREPORT_DEBUG=1 shows the traceback)", 1)
        # standalone_mode=False returns the exit code of ctx.exit() (e.g. --help, --version)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ValidationError as exc:
            raise click.ClickException(f"invalid {exc.attr or 'input'}: {exc.detail}") from None
        except TaskReportError as exc:
            raise click.ClickException(explain(exc, settings_of(ctx))) from None
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


class LazyGroup(ReportingGroup):
    """A group whose subcommands are imported when one is run (or its own help is asked for). The group's
    help lists them from their registered one-line help, without importing any."""

    def __init__(self, *args: Any, lazy: Mapping[str, Lazy] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, Lazy] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *sorted(set(self.commands) - set(self.lazy))]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is not None or cmd_name not in self.lazy:
            return command
        module_name, _, attribute = self.lazy[cmd_name].target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            # e.g. serve without the server extra
            raise click.ClickException(f"'{cmd_name}' is not available: {exc}") from None
        command = getattr(module, attribute)
        if not isinstance(command, click.Command):  # pragma: no cover - a wrong registration
            raise TypeError(f"{self.lazy[cmd_name].target} is not a click command")
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for name in self.list_commands(ctx):
            if name in self.lazy:
                entry = self.lazy[name]
                sections.setdefault(entry.section, []).append((name, entry.help))
            else:
                command = self.commands[name]
                if not command.hidden:
                    sections.setdefault("Commands", []).append((name, command.get_short_help_str(80)))
        order = list(dict.fromkeys(entry.section for entry in self.lazy.values()))
        # one column width for every section, so that they line up
        width = max((len(name) for rows in sections.values() for name, _ in rows), default=0)
        for section in sorted(sections, key=lambda s: order.index(s) if s in order else len(order)):
            with formatter.section(section):
                formatter.write_dl([(name.ljust(width), text) for name, text in sections[section]])
