"""A click group that turns every failure into one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from .._errors import NotFound, TaskReportError, TransportError


def _fail(message: str, code: int) -> None:
    click.echo(f"taskreport: {message}", err=True)
    sys.exit(code)


class ReportingGroup(click.Group):
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
        except click.Abort:
            _fail("aborted", 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        # standalone_mode=False returns the exit code of ctx.exit() (e.g. --help, --version)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NotFound as exc:
            raise click.ClickException(f"not found: {exc}") from None
        except TransportError as exc:
            raise click.ClickException(f"cannot reach the task service: {exc}") from None
        except TaskReportError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
