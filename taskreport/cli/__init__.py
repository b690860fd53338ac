"""The ``taskreport`` command.

Each subcommand's module is imported only when that subcommand runs, so ``taskreport --help`` loads neither
requests, nor the server, nor the store. Register a subcommand in ``COMMANDS`` with its one-line help (a test
checks that it matches the command's own).
"""

from __future__ import annotations

from typing import Any

import click

from .._version import __version__
from ._group import Lazy, LazyGroup
from ._settings import Settings

__all__ = ["COMMANDS", "main"]

_TASKS, _SETUP, _SERVICE = "Tasks", "Setup", "Service"
COMMANDS = {
    "run": Lazy("taskreport.cli._run:run", "Run a command and report it as a task.", _TASKS),
    "list": Lazy("taskreport.cli._tasks:list_cmd", "List tasks, newest first.", _TASKS),
    "get": Lazy("taskreport.cli._tasks:get_cmd", "Show one task.", _TASKS),
    "watch": Lazy("taskreport.cli._watch:watch", "Show live progress bars until the tasks end.", _TASKS),
    "create": Lazy("taskreport.cli._report:create", "Create a task and print its id.", _TASKS),
    "update": Lazy("taskreport.cli._report:update", "Change a task's value, status, data or tags.", _TASKS),
    "success": Lazy("taskreport.cli._report:success", "Mark a task succeeded.", _TASKS),
    "error": Lazy("taskreport.cli._report:error", "Mark a task failed.", _TASKS),
    "cancel": Lazy("taskreport.cli._report:cancel", "Mark a task cancelled.", _TASKS),
    "login": Lazy("taskreport.cli._account:login", "Log in to a task service and save the token.", _SETUP),
    "logout": Lazy("taskreport.cli._account:logout", "Remove the saved token.", _SETUP),
    "configure": Lazy("taskreport.cli._account:configure", "Set the url, organization, project or token.", _SETUP),
    "config": Lazy("taskreport.cli._account:config", "Show the settings and where each came from.", _SETUP),
    "flush-spool": Lazy("taskreport.cli._tasks:flush_spool", "Deliver what exited processes left in the spool.",
                        _SERVICE),
    "serve": Lazy("taskreport.cli._serve:serve", "Run the task service (the task API) on this machine.", _SERVICE),
    "admin": Lazy(
        "taskreport.cli._admin:admin",
        "Manage the users, projects and API tokens of a taskreport server's database.",
        _SERVICE,
    ),
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="taskreport")
@click.option("--url", metavar="URL", help="Service URL [env TASKREPORT_URL]; none: the embedded store.")
@click.option("--token", metavar="TOKEN", help="API token or project key [env TASKREPORT_TOKEN].")
@click.option("--org", "organization", metavar="ORG", help="Organization slug [env TASKREPORT_ORG].")
@click.option("--project", metavar="PROJECT", help="Project slug [env TASKREPORT_PROJECT].")
@click.pass_context
def main(ctx: click.Context, /, **settings: Any) -> None:
    """Report and inspect tasks.

    Settings come from these options, then TASKREPORT_* variables, then the config file ('taskreport config
    show' tells which).
    """
    ctx.obj = Settings(**settings)
