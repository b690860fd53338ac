"""A click group that turns every failure into one line on stderr and a non-zero exit."""

from __future__ import annotations

from typing import Any

import click

from .._errors import ConfigurationError, NotFound, TaskReportError, TransportError


class ReportingGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NotFound as exc:
            raise click.ClickException(f"not found: {exc}") from None
        except TransportError as exc:
            raise click.ClickException(f"cannot reach the service: {exc}") from None
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from None
        except TaskReportError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
