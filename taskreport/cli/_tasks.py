"""``taskreport list``, ``get`` and ``flush-spool``."""

from __future__ import annotations

import datetime as _dt
import itertools
import json
from typing import Any

import click

from .._client import Client, init
from .._errors import NotFound
from .._models import TaskRecord
from .._status import Status


def client_from(ctx: click.Context, **options: Any) -> Client:
    """A client for this command: global options over the environment over the config file.

    It never spools: a CLI that only reads must not leave files behind.
    """
    settings = dict(ctx.find_root().obj or {})
    return init(spool=False, **settings, **options)


def _age(when: _dt.datetime | None) -> str:
    if when is None:
        return "-"
    seconds = (_dt.datetime.now(_dt.timezone.utc) - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{max(0, int(seconds))}s ago"


def _progress(record: TaskRecord) -> str:
    if record.value is None:
        return "-"
    percent = f" ({record.value_percent}%)" if record.value_percent is not None else ""
    return f"{record.value}/{record.value_max}{percent}"


def _table(records: list[TaskRecord]) -> str:
    rows = [("ID", "NAME", "STATUS", "PROGRESS", "UPDATED")]
    rows += [(r.id, r.name, r.status.value, _progress(r), _age(r.updated)) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


@click.command("list")
@click.option(
    "--status",
    type=click.Choice([s.value for s in Status]),
    multiple=True,
    help="Only tasks in this status (repeatable).",
)
@click.option("--name", help="Only tasks with this exact name.")
@click.option("--tag", "tags", multiple=True, metavar="KEY:VALUE", help="Only tasks with this tag (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many tasks.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@click.pass_context
def list_cmd(
    ctx: click.Context, status: tuple[str, ...], name: str | None, tags: tuple[str, ...], limit: int, as_json: bool
) -> None:
    """List tasks, newest first."""
    client = client_from(ctx)
    filters: dict[str, Any] = {"page_size": min(limit, 200)}
    if status:
        filters["status"] = list(status)
    if name:
        filters["name"] = name
    if tags:
        pairs = [t.partition(":") for t in tags]
        bad = [t for t, (_, sep, _) in zip(tags, pairs, strict=True) if not sep]
        if bad:
            raise click.BadParameter(f"{bad[0]!r} is not KEY:VALUE", param_hint="--tag")
        filters["tag"] = {k: v for k, _, v in pairs}
    records = list(itertools.islice(client.list_tasks(**filters), limit))
    if as_json:
        click.echo(json.dumps([r.to_api() for r in records], indent=2))
    elif records:
        click.echo(_table(records))
    else:
        click.echo("no tasks", err=True)


@click.command("get")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="The task as JSON.")
@click.pass_context
def get_cmd(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Show one task."""
    try:
        record = client_from(ctx).get_task(task_id)
    except NotFound:
        raise click.ClickException(f"no task with id {task_id!r}") from None
    if as_json:
        click.echo(json.dumps(record.to_api(), indent=2))
        return
    body = record.to_api()
    width = max(len(k) for k in body)
    for key, value in body.items():
        if value in (None, "", {}):
            continue
        shown = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        click.echo(f"{key.ljust(width)}  {shown}")


@click.command("flush-spool")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to keep trying.")
@click.pass_context
def flush_spool(ctx: click.Context, timeout: float) -> None:
    """Deliver tasks that earlier processes could not send before they exited."""
    client = init(spool=True, **dict(ctx.find_root().obj or {}))
    count, delivered = client.deliver_spool(timeout)
    if not delivered:
        raise click.ClickException(f"{count} spooled task(s) claimed; not all could be delivered (kept in spool)")
    click.echo(f"delivered {count} spooled task(s)")
