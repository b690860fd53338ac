"""The ``taskreport`` command."""

from __future__ import annotations

from typing import Any

import click

from ._admin import admin
from ._group import ReportingGroup
from ._serve import serve
from ._tasks import flush_spool, get_cmd, list_cmd

__all__ = ["main"]


@click.group(cls=ReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="taskreport", prog_name="taskreport")
@click.option("--url", envvar="TASKREPORT_URL", help="Service URL; without one, the embedded store.")
@click.option("--token", envvar="TASKREPORT_TOKEN", help="API token or project key.")
@click.option("--org", "organization", envvar="TASKREPORT_ORG", help="Organization slug.")
@click.option("--project", envvar="TASKREPORT_PROJECT", help="Project slug.")
@click.pass_context
def main(ctx: click.Context, /, **settings: Any) -> None:
    """Report and inspect tasks."""
    ctx.obj = {k: v for k, v in settings.items() if v is not None}


main.add_command(list_cmd)
main.add_command(get_cmd)
main.add_command(flush_spool)
main.add_command(serve)
main.add_command(admin)
