"""``taskreport admin`` commands for the dashboard: what a task's public page shows, and its signing secret."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from .._config import DEFAULT_PROJECT
from .._errors import TaskReportError
from .._store import Store, open_store
from .._store import _dashboard as dashboard_store


@contextmanager
def _store(ctx: click.Context) -> Iterator[Store]:
    from ._serve import default_db

    store = open_store(ctx.obj["db"] or default_db())
    try:
        yield store
    except TaskReportError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


@click.command("public-details")
@click.argument("organization")
@click.argument("project", default=DEFAULT_PROJECT)
@click.option("--on/--off", "allowed", default=None, help="Show data, tags and actions on public pages, or not.")
@click.pass_context
def public_details(ctx: click.Context, organization: str, project: str, allowed: bool | None) -> None:
    """Whether the public page of a project's tasks (their public_url) shows their data, tags and actions
    besides name, status, progress and times. Without --on or --off, says which it is."""
    with _store(ctx) as store, store.transaction() as tx:
        scope = tx.get_scope(organization, project)
        if scope is None:
            raise click.ClickException(f"no project {organization}/{project}")
        if allowed is not None:
            dashboard_store.set_public_details(tx, organization, project, allowed)
        shown = dashboard_store.project_settings(tx, scope.project_id)["public_details"]
    what = "name, status, progress, times, data, tags and actions" if shown else "name, status, progress and times"
    click.echo(f"{organization}/{project}: public pages show {what}")


@click.command("dashboard-secret")
@click.option("--rotate", is_flag=True, required=True,
              help="Replace the secret: every dashboard session and every public link ends.")  # fmt: skip
@click.pass_context
def dashboard_secret(ctx: click.Context, rotate: bool) -> None:
    """Replace the secret that signs the dashboard's cookies and the tasks' public links (kept in the
    database). Running servers take the new one within a minute."""
    with _store(ctx) as store, store.transaction() as tx:
        dashboard_store.rotate_secret(tx)
    click.echo("dashboard secret replaced: every session and public link signed with the old one has ended")
