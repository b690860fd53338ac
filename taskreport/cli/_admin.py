"""``taskreport admin``: users, projects and tokens of a server's database."""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from .._config import DEFAULT_PROJECT, LOCAL_ORGANIZATION
from .._errors import NotFound, TaskReportError
from .._store import Store, Tx, open_store
from ._serve import default_db


@contextmanager
def _store(ctx: click.Context) -> Iterator[Store]:
    store = open_store(ctx.obj["db"] or default_db())
    try:
        yield store
    except TaskReportError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


@click.group()
@click.option(
    "--db",
    envvar="TASKREPORT_SERVE_DB",
    help="Store: a SQLite path or postgresql://... [default: the embedded store, $TASKREPORT_HOME/taskreport.db]",
)
@click.pass_context
def admin(ctx: click.Context, db: str | None) -> None:
    """Manage the users, projects and API tokens of a taskreport server's database."""
    ctx.obj = {"db": db}


def _existing_organization(tx: Tx, organization: str) -> None:
    """A ClickException with the command that makes it, for an organization that does not exist (a typo
    must not make a new, empty organization)."""
    try:
        tx.organization_id(organization)
    except NotFound:
        raise click.ClickException(
            f"no organization {organization!r}: create it first with 'taskreport admin create-project {organization}'"
        ) from None


def _password() -> str:
    """Prompted twice on a terminal; else one line of standard input (a script or a pipe)."""
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    line = sys.stdin.readline()
    if not line.strip():
        raise click.UsageError("no password: give --password, or one line on standard input")
    return line.rstrip("\r\n")


@admin.command("create-user")
@click.argument("username")
@click.option("--org", "organization", default=LOCAL_ORGANIZATION, show_default=True)
@click.option(
    "--password",
    envvar="TASKREPORT_ADMIN_PASSWORD",
    help="At least 8 characters [prompted on a terminal, else read as one line from standard input].",
)
@click.pass_context
def create_user(ctx: click.Context, username: str, organization: str, password: str | None) -> None:
    """Create a user in an organization; they log in with POST /api/authenticate/."""
    with _store(ctx) as store:
        with store.transaction(write=False) as tx:
            _existing_organization(tx, organization)
        password = _password() if password is None else password
        with store.transaction() as tx:
            user_id = tx.create_user(username, password, organization)
    click.echo(f"created user {username!r} (id {user_id}) in organization {organization!r}")


@admin.command("create-project")
@click.argument("organization")
@click.argument("project", default=DEFAULT_PROJECT)
@click.option("--name", help="Display name [default: the slug].")
@click.pass_context
def create_project(ctx: click.Context, organization: str, project: str, name: str | None) -> None:
    """Create a project (and its organization, if new)."""
    with _store(ctx) as store, store.transaction() as tx:
        tx.ensure_project(organization, project, name)
    click.echo(f"project {organization}/{project} is ready")


@admin.command("create-token")
@click.argument("organization")
@click.option("--user", "username", help="Issue the token on behalf of this user.")
@click.option("--name", default="", help="A label, shown by list-tokens.")
@click.pass_context
def create_token(ctx: click.Context, organization: str, username: str | None, name: str) -> None:
    """Issue an API token for an organization. It is printed once; the database keeps only a hash."""
    with _store(ctx) as store, store.transaction() as tx:
        _existing_organization(tx, organization)
        user_id = None
        if username is not None:
            user_id = tx.user_id(username)
            if user_id is None:
                raise click.ClickException(f"no user {username!r}")
        key = tx.create_token(organization, user_id=user_id, name=name)
    click.echo(key)


@admin.command("rotate-token")
@click.argument("token_id", type=int)
@click.pass_context
def rotate_token(ctx: click.Context, token_id: int) -> None:
    """Revoke a token and print its replacement (same organization, user and name)."""
    with _store(ctx) as store, store.transaction() as tx:
        key = tx.rotate_token(token_id)
    click.echo(key)


@admin.command("revoke-token")
@click.argument("token_id", type=int)
@click.pass_context
def revoke_token(ctx: click.Context, token_id: int) -> None:
    """Revoke an active token (an unknown or revoked one fails). Servers stop accepting it within their token
    cache time (5 s by default)."""
    with _store(ctx) as store, store.transaction() as tx:
        tx.revoke_token(token_id)
    click.echo(f"revoked token {token_id}")


def _when(epoch: Any) -> str:
    if epoch is None:
        return "-"
    return _dt.datetime.fromtimestamp(float(epoch), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


@admin.command("list-tokens")
@click.option("--org", "organization", help="Only this organization's tokens.")
@click.pass_context
def list_tokens(ctx: click.Context, organization: str | None) -> None:
    """List tokens: id, organization, key prefix, name, created and revoked times. Keys are never shown."""
    with _store(ctx) as store, store.transaction(write=False) as tx:
        rows = tx.list_tokens(organization)
    header = ("ID", "ORGANIZATION", "PREFIX", "NAME", "CREATED", "REVOKED")
    table = [header] + [
        (str(r["id"]), r["organization"], f"{r['prefix']}...", r["name"] or "-", _when(r["created"]),
         _when(r["revoked"]))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        # the id right-aligned, the rest left-aligned, each column as wide as its widest cell
        pairs = enumerate(zip(line, widths, strict=True))
        cells = [cell.rjust(width) if i == 0 else cell.ljust(width) for i, (cell, width) in pairs]
        click.echo("  ".join(cells).rstrip())


@admin.command("webhook-secret")
@click.argument("organization")
@click.argument("project", default=DEFAULT_PROJECT)
@click.option("--rotate", is_flag=True, help="Replace the secret (receivers must then be given the new one).")
@click.pass_context
def webhook_secret(ctx: click.Context, organization: str, project: str, rotate: bool) -> None:
    """Print the secret a project's webhook deliveries are signed with (Standard Webhooks)."""
    with _store(ctx) as store, store.transaction() as tx:
        scope = tx.get_scope(organization, project)
        if scope is None:
            raise click.ClickException(
                f"no project {organization}/{project}: create it with "
                f"'taskreport admin create-project {organization} {project}'"
            )
        secret = tx.webhook_secret(scope.project_id, rotate=rotate)
    click.echo(secret)


# the dashboard's (taskreport/cli/_admin_dashboard.py)
from ._admin_dashboard import dashboard_secret, public_details  # noqa: E402

admin.add_command(public_details)
admin.add_command(dashboard_secret)
