"""``taskreport list``, ``get`` and ``flush-spool``."""

from __future__ import annotations

import datetime as _dt
import itertools
import json
from typing import TYPE_CHECKING, Any

import click

from .._status import Status
from ._params import Seconds, WholeNumber, tag_pairs
from ._settings import settings_of

if TYPE_CHECKING:
    from .._models import TaskRecord

#: children shown under each task in a tree (more are summarised)
TREE_CHILDREN = 20
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def age(when: _dt.datetime | None) -> str:
    if when is None:
        return "-"
    seconds = (_dt.datetime.now(_dt.timezone.utc) - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{max(0, int(seconds))}s ago"


def progress_text(record: TaskRecord) -> str:
    if record.value is None:
        return "-"
    percent = f" ({record.value_percent}%)" if record.value_percent is not None else ""
    return f"{record.value}/{record.value_max}{percent}"


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _row(record: TaskRecord, prefix: str = "") -> tuple[str, ...]:
    return (record.id, prefix + record.name, record.status.value, progress_text(record), age(record.updated))


_HEADER = ("ID", "NAME", "STATUS", "PROGRESS", "UPDATED")


def build_tree(records: list[TaskRecord]) -> list[tuple[TaskRecord, list[TaskRecord], bool]]:
    """Each listed task that is not under another listed one, with its children (oldest first) and whether
    there are more than shown. Tasks nest one level deep."""
    import taskreport

    shown = {r.id for r in records}
    under: dict[str, list[TaskRecord]] = {}
    for record in records:
        if record.parent in shown:
            under.setdefault(str(record.parent), []).append(record)
    tree = []
    for record in records:
        if record.parent in shown:
            continue
        children = {c.id: c for c in under.get(record.id, [])}
        more = False
        if record.parent is None:
            found = list(itertools.islice(taskreport.list_tasks(parent=record.id), TREE_CHILDREN + 1))
            more = len(found) > TREE_CHILDREN
            for child in found[:TREE_CHILDREN]:
                children.setdefault(child.id, child)
        ordered = sorted(children.values(), key=lambda c: (c.created or _EPOCH, c.id))
        tree.append((record, ordered, more))
    return tree


@click.command("list")
@click.option(
    "--status",
    type=click.Choice([s.value for s in Status]),
    multiple=True,
    help="Only tasks in this status (repeatable).",
)
@click.option("--name", help="Only tasks with this exact name.")
@click.option(
    "--tag", "tags", multiple=True, metavar="KEY:VALUE", help="Only tasks with this tag (repeatable; all must match)."
)
@click.option("--parent", metavar="ID", help="Only the children of this task.")
@click.option("--external-id", metavar="TEXT", help="Only tasks with this external id.")
@click.option("--tree", is_flag=True, help="Show each task's children under it.")
@click.option("--limit", type=WholeNumber(min=1), default=20, show_default=True, help="How many tasks.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@click.pass_context
def list_cmd(
    ctx: click.Context,
    status: tuple[str, ...],
    name: str | None,
    tags: tuple[str, ...],
    parent: str | None,
    external_id: str | None,
    tree: bool,
    limit: int,
    as_json: bool,
) -> None:
    """List tasks, newest first."""
    import taskreport

    filters: dict[str, Any] = {"page_size": min(limit, 200)}
    if status:
        filters["status"] = list(status)
    if tags:
        filters["tag"] = tag_pairs(tags)
    for key, value in (("name", name), ("parent", parent), ("external_id", external_id)):
        if value is not None:
            filters[key] = value
    settings_of(ctx).connect()
    records = list(itertools.islice(taskreport.list_tasks(**filters), limit))
    if tree:
        nested = build_tree(records)
        if as_json:
            body = [{**r.to_api(), "children": [c.to_api() for c in children]} for r, children, _ in nested]
            click.echo(json.dumps(body, indent=2))
            return
        rows: list[tuple[str, ...]] = [_HEADER]
        for record, children, more in nested:
            rows.append(_row(record))
            for i, child in enumerate(children):
                last = i == len(children) - 1 and not more
                rows.append(_row(child, "└─ " if last else "├─ "))
            if more:
                rows.append(("", f"└─ … more: taskreport list --parent {record.id}", "", "", ""))
        if len(rows) > 1:
            click.echo(table(rows))
        else:
            click.echo("no tasks", err=True)
        return
    if as_json:
        click.echo(json.dumps([r.to_api() for r in records], indent=2))
    elif records:
        click.echo(table([_HEADER, *(_row(r) for r in records)]))
    else:
        click.echo("no tasks", err=True)


@click.command("get")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="The task as JSON.")
@click.pass_context
def get_cmd(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Show one task."""
    import taskreport

    settings = settings_of(ctx)
    settings.connect()
    try:
        record = taskreport.get_task(task_id)
    except taskreport.NotFound:
        raise click.ClickException(no_task(settings, task_id)) from None
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


def no_task(settings: Any, task_id: str) -> str:
    """An unknown id, with where it was looked for (a wrong project looks the same to the service)."""
    config = settings.config
    return (
        f"no task with id {task_id!r} in project {config.organization}/{config.project} at {settings.where()} "
        f"({settings.describe('organization', 'project')})"
    )


@click.command("flush-spool")
@click.option("--timeout", type=Seconds(), default=30.0, show_default=True, help="Seconds to keep trying.")
@click.pass_context
def flush_spool(ctx: click.Context, timeout: float) -> None:
    """Deliver what exited processes left in the spool.

    Tasks that a process could not send before it exited are kept in the spool; this sends them.
    """
    settings = settings_of(ctx)
    # this command delivers through the library's spool: it spools again what it could not deliver
    settings.connect(spool=True, strict=False, request_retries=3)
    import taskreport

    count, delivered = taskreport.get_client().deliver_spool(timeout)
    if not delivered:
        raise click.ClickException(f"{count} spooled task(s) claimed; not all could be delivered (kept in spool)")
    click.echo(f"delivered {count} spooled task(s)")
