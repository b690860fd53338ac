"""``taskreport create``, ``update``, ``success``, ``error`` and ``cancel``: report from a shell script.

They use the library's public API as a Python program would (``Task.create``, ``Task.get``, ``update``,
``flush``), and wait until the service has the change: a zero exit means it is there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .._status import Status
from ._params import Seconds, WholeNumber, data_pairs, tag_pairs
from ._settings import Settings, settings_of
from ._tasks import no_task

if TYPE_CHECKING:
    import taskreport

F = TypeVar("F", bound=Callable[..., Any])

#: the option that sets each task field, for errors that name a field
FIELD_OPTIONS = {
    "name": "NAME",
    "status": "--status",
    "value": "--value",
    "value_max": "--value-max",
    "data": "--data",
    "tags": "--tag",
    "parent": "--parent",
    "external_id": "--external-id",
    "queue": "--queue",
    "stale_timeout": "--stale-timeout",
    "max_runtime": "--max-runtime",
}
#: how often a command waiting for delivery looks at how it goes
_STEP = 0.2


def _timeout_option(f: F) -> F:
    return click.option(
        "--timeout",
        type=Seconds(positive=True),
        default=10.0,
        show_default=True,
        help="Seconds to wait for the service to have it.",
    )(f)


def _data_options(f: F) -> F:
    f = click.option(
        "--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Set a tag (repeatable)."
    )(f)
    return click.option(
        "--data",
        "data",
        multiple=True,
        metavar="KEY=TEXT|KEY:=JSON",
        help="Set a key of the task's data: text, or with := a JSON value (repeatable).",
    )(f)


def _fields(
    *,
    status: str | None = None,
    value: int | None = None,
    value_max: int | None = None,
    data: tuple[str, ...] = (),
    tags: tuple[str, ...] = (),
    **more: Any,
) -> dict[str, Any]:
    fields: dict[str, Any] = {k: v for k, v in more.items() if v is not None}
    if status is not None:
        fields["status"] = status
    if value is not None:
        fields["value"] = value
    if value_max is not None:
        fields["value_max"] = value_max
    if data:
        fields["data"] = data_pairs(data)
    if tags:
        fields["tags"] = tag_pairs(tags)
    return fields


def _invalid(exc: taskreport.ValidationError) -> click.BadParameter:
    field = (exc.attr or "").split(".", 1)[0]
    return click.BadParameter(exc.detail, param_hint=f"'{FIELD_OPTIONS.get(field, field or 'input')}'")


def deliver(settings: Settings, timeout: float, task: taskreport.Task | None = None) -> None:
    """Wait until the service has every change (and ``task`` its id). What the service refuses is raised by
    ``flush`` (strict mode); when it can't be reached, one request of our own says why, at once."""
    import taskreport

    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        done = taskreport.flush(max(0.0, min(_STEP, remaining)))
        if done:
            if task is None or task.wait_id(0) is not None:
                return
            reason = settings.log.last_message() if settings.log else None
            raise click.ClickException(f"the task was not created: {reason or 'the service did not answer it'}")
        if taskreport.stats()["retries"]:
            # the library will retry; a person is waiting: ask once, and say what is wrong
            taskreport.list_tasks(page_size=1).page()
        if remaining <= 0:
            raise click.ClickException(f"{settings.where()} did not take the change within {timeout:g} s")


def _fetch(settings: Settings, task_id: str) -> taskreport.Task:
    import taskreport

    settings.connect()
    try:
        return taskreport.Task.get(task_id)
    except taskreport.NotFound:
        raise click.ClickException(no_task(settings, task_id)) from None


@click.command()
@click.argument("name")
@click.option("--status", type=click.Choice([s.value for s in Status]), help="Status [default: pending].")
@click.option("--value", type=WholeNumber(min=0), help="Progress so far.")
@click.option("--value-max", type=WholeNumber(min=0), help="The value that means done [default: 100].")
@_data_options
@click.option("--parent", metavar="ID", help="The task this one is part of.")
@click.option("--external-id", metavar="TEXT", help="Your own id for it.")
@click.option("--queue", metavar="TEXT", help="Queue name.")
@click.option("--stale-timeout", type=WholeNumber(min=1), metavar="SECONDS", help="Stale after this long quiet.")
@click.option("--max-runtime", type=WholeNumber(min=1), metavar="SECONDS", help="Expected longest run.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole task as JSON, not only its id.")
@_timeout_option
@click.pass_context
def create(ctx: click.Context, /, name: str, as_json: bool, timeout: float, **options: Any) -> None:
    """Create a task and print its id.

    \b
        id=$(taskreport create "nightly backup" --status processing --value-max 3)
        taskreport update "$id" --value 1
        taskreport success "$id"
    """
    import taskreport

    fields = _fields(**options)
    settings = settings_of(ctx)
    settings.connect()
    try:
        task = taskreport.Task.create(name, **fields)
    except taskreport.ValidationError as exc:
        raise _invalid(exc) from None
    deliver(settings, timeout, task)
    task_id = task.wait_id(0)
    assert task_id is not None
    if as_json:
        click.echo(json.dumps(taskreport.get_task(task_id).to_api(), indent=2))
    else:
        click.echo(task_id)


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("--status", type=click.Choice([s.value for s in Status]), help="New status.")
@click.option("--value", type=WholeNumber(min=0), help="Progress so far.")
@click.option("--value-max", type=WholeNumber(min=0), help="The value that means done.")
@_data_options
@_timeout_option
@click.pass_context
def update(ctx: click.Context, /, task_id: str, timeout: float, **options: Any) -> None:
    """Change a task's value, status, data or tags.

    Data and tags are merged into what the task has.
    """
    fields = _fields(**options)
    if not fields:
        raise click.UsageError("nothing to change: give --value, --value-max, --status, --data or --tag")
    _change(ctx, task_id, timeout, lambda task: task.update(**fields))


def _change(ctx: click.Context, task_id: str, timeout: float, change: Callable[[Any], None]) -> None:
    import taskreport

    settings = settings_of(ctx)
    task = _fetch(settings, task_id)
    try:
        change(task)
    except taskreport.ValidationError as exc:
        raise _invalid(exc) from None
    deliver(settings, timeout, task)


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("--data", multiple=True, metavar="KEY=TEXT|KEY:=JSON", help="Set a key of the task's data.")
@_timeout_option
@click.pass_context
def success(ctx: click.Context, task_id: str, data: tuple[str, ...], timeout: float) -> None:
    """Mark a task succeeded."""
    fields = _fields(data=data)
    _change(ctx, task_id, timeout, lambda task: task.success(**fields))


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("--message", "-m", metavar="TEXT", help="What went wrong (kept in the task's data).")
@click.option("--data", multiple=True, metavar="KEY=TEXT|KEY:=JSON", help="Set a key of the task's data.")
@_timeout_option
@click.pass_context
def error(ctx: click.Context, task_id: str, message: str | None, data: tuple[str, ...], timeout: float) -> None:
    """Mark a task failed."""
    details = data_pairs(data)
    if message is not None:
        details["message"] = message
    _change(ctx, task_id, timeout, lambda task: task.error(data=details or None))


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("--data", multiple=True, metavar="KEY=TEXT|KEY:=JSON", help="Set a key of the task's data.")
@_timeout_option
@click.pass_context
def cancel(ctx: click.Context, task_id: str, data: tuple[str, ...], timeout: float) -> None:
    """Mark a task cancelled."""
    fields = _fields(data=data)
    _change(ctx, task_id, timeout, lambda task: task.cancel(**fields))
