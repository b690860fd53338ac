"""``taskreport watch``: live progress bars until the watched tasks end; exit 0 if all of them succeeded.

It reads tasks only through the library's public functions (``get_task``, ``list_tasks``), so it works over
HTTP and on the embedded store alike.
"""

from __future__ import annotations

import abc
import datetime as _dt
import itertools
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from .._status import RUNNING, Status
from ._bars import Screen, Style, Tracked, duration, layout, measured_rate, percent, rate_text, rows_of
from ._params import Seconds, WholeNumber
from ._settings import Settings, settings_of
from ._tasks import no_task

if TYPE_CHECKING:
    from .._models import TaskRecord

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
#: what "the running ones" are when no id and no --status is given
DEFAULT_STATUSES = ("pending", *sorted(RUNNING))
#: children fetched and shown under each watched task
CHILDREN = 30
#: seconds the service may stay unreachable before watch gives up
GIVE_UP = 60.0
#: in plain output, at most one progress line per task this often (a status change is always told)
PLAIN_EVERY = 10.0


@click.command()
@click.argument("task_ids", metavar="[ID]...", nargs=-1)
@click.option(
    "--status",
    "statuses",
    type=click.Choice([s.value for s in Status]),
    multiple=True,
    help="Without ids: watch the tasks in this status (repeatable) [default: pending and running].",
)
@click.option("--interval", type=Seconds(positive=True), default=1.0, show_default=True, help="Seconds between looks.")
@click.option("--timeout", type=Seconds(positive=True), help="Give up after this many seconds (exit 1).")
@click.option("--limit", type=WholeNumber(min=1), default=50, show_default=True, help="Without ids: at most this many.")
@click.option("--plain", is_flag=True, help="Lines of text, not bars (the default when not on a terminal).")
@click.pass_context
def watch(
    ctx: click.Context,
    task_ids: tuple[str, ...],
    statuses: tuple[str, ...],
    interval: float,
    timeout: float | None,
    limit: int,
    plain: bool,
) -> None:
    """Show live progress bars until the tasks end.

    Watches the tasks given by id, or else those pending or running now (or in --status). Shows each one's
    value, percent, rate, time left and status, with its children under it. Exits when every watched task
    has ended: 0 if all succeeded, 1 otherwise, so 'taskreport watch ID && deploy' works. Prints lines of
    text instead of bars when the output is not a terminal.
    """
    if task_ids and statuses:
        raise click.UsageError("give task ids or --status, not both")
    settings = settings_of(ctx)
    settings.connect()
    watcher = Watcher(settings, interval)
    tracked = watcher.start(task_ids, statuses or DEFAULT_STATUSES, limit)
    if not tracked:
        click.echo(f"no {' or '.join(statuses or ('pending', 'running'))} tasks to watch", err=True)
        return
    terminal = not plain and sys.stdout.isatty()
    if terminal:
        color = not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
        view: View = TerminalView(Style(color, unicode=encoding.startswith("utf")))
    else:
        view = PlainView()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            view.show(tracked, watcher.problem)
            if all(t.ended for t in tracked):
                break
            if deadline is not None and time.monotonic() >= deadline:
                view.close()
                running = [t for t in tracked if not t.ended]
                raise click.ClickException(
                    f"{len(running)} watched task(s) still running after {timeout:g} s: "
                    + ", ".join(_label(t) for t in running[:5])
                )
            time.sleep(interval)
            watcher.poll(tracked)
    finally:
        view.close()
    failed = [t for t in tracked if not t.succeeded]
    if failed:
        raise click.ClickException(
            f"{len(failed)} of {len(tracked)} watched task(s) did not succeed: "
            + ", ".join(f"{_label(t)} {t.status}" for t in failed[:5])
            + (" …" if len(failed) > 5 else "")
        )
    click.echo(f"{'all ' if len(tracked) > 1 else ''}{len(tracked)} watched task(s) succeeded")


def _label(tracked: Tracked) -> str:
    return f"{tracked.record.name} ({tracked.record.id})"


class Watcher:
    """Fetches the watched tasks and their children; rides out a service that is briefly unreachable."""

    def __init__(self, settings: Settings, interval: float) -> None:
        self.settings = settings
        self.interval = interval
        self.problem: str | None = None
        self.failing_since: float | None = None

    def start(self, task_ids: tuple[str, ...], statuses: tuple[str, ...], limit: int) -> list[Tracked]:
        import taskreport

        if task_ids:
            tracked = []
            for task_id in dict.fromkeys(task_ids):
                try:
                    tracked.append(Tracked(taskreport.get_task(task_id)))
                except taskreport.NotFound:
                    raise click.ClickException(no_task(self.settings, task_id)) from None
        else:
            listing = taskreport.list_tasks(status=list(statuses), page_size=min(limit, 200))
            found = list(itertools.islice(listing, limit))
            ids = {r.id for r in found}
            # a child whose parent is watched too is shown under it, not on its own
            tracked = [Tracked(r) for r in reversed(found) if r.parent not in ids]
        for item in tracked:
            self._children(item)
        return tracked

    def _children(self, item: Tracked) -> None:
        import taskreport

        if item.record.parent is not None:
            return  # tasks nest one level deep
        listing = taskreport.list_tasks(parent=item.record.id, page_size=CHILDREN + 1)
        found = list(itertools.islice(listing, CHILDREN + 1))
        item.more_children = len(found) > CHILDREN
        item.children = sorted(found[:CHILDREN], key=lambda r: (r.created or _EPOCH, r.id))

    def poll(self, tracked: list[Tracked]) -> None:
        import taskreport

        try:
            for item in tracked:
                if item.ended:
                    continue
                try:
                    item.see(taskreport.get_task(item.record.id))
                except taskreport.NotFound:
                    item.gone = True  # deleted, or no longer visible to this token
                    continue
                self._children(item)
        except (taskreport.TransportError, taskreport.ServerError, taskreport.RateLimited) as exc:
            from ._group import explain

            now = time.monotonic()
            self.failing_since = self.failing_since or now
            if now - self.failing_since > max(GIVE_UP, 3 * self.interval):
                raise
            self.problem = f"trying again: {explain(exc, self.settings)}"
            return
        self.problem = None
        self.failing_since = None


class View(abc.ABC):
    @abc.abstractmethod
    def show(self, tracked: list[Tracked], problem: str | None) -> None: ...

    def close(self) -> None:  # noqa: B027 - most views have nothing to undo
        pass


class TerminalView(View):
    """Bars redrawn in place, with a footer; at most as many lines as the terminal has."""

    def __init__(self, style: Style) -> None:
        self.style = style
        self.screen = Screen(sys.stdout)

    def show(self, tracked: list[Tracked], problem: str | None) -> None:
        width, height = self.screen.size()
        rows = rows_of(tracked)
        lines = layout(rows, width, self.style)
        room = max(1, height - 2)
        if len(lines) > room:
            hidden = len(lines) - (room - 1)
            lines = [*lines[: room - 1], f"… {hidden} more line(s): a taller terminal shows them"]
        running = sum(not t.ended for t in tracked)
        footer = problem or (
            f"{len(tracked)} task(s), {running} running · Ctrl-C stops watching" if running
            else f"{len(tracked)} task(s) ended"
        )
        lines.append(self.style.paint(footer[: max(10, width - 1)], "33" if problem else "2"))
        self.screen.draw(lines)

    def close(self) -> None:
        self.screen.close()


class PlainView(View):
    """One line per change: a task's status always, its progress at most every PLAIN_EVERY seconds."""

    def __init__(self) -> None:
        self.told: dict[str, tuple[str, float, Any]] = {}
        self.problem: str | None = None

    def show(self, tracked: list[Tracked], problem: str | None) -> None:
        if problem != self.problem and problem is not None:
            click.echo(f"{time.strftime('%H:%M:%S')}  {problem}")
        self.problem = problem
        now = time.monotonic()
        for item in tracked:
            self._tell(item.record, item.status, item, now, "")
            for child in item.children:
                self._tell(child, child.status.value, None, now, "  ")
        sys.stdout.flush()

    def _tell(self, record: TaskRecord, status: str, item: Tracked | None, now: float, indent: str) -> None:
        last = self.told.get(record.id)
        if last is not None:
            last_status, at, value = last
            if status == last_status and (value == record.value or now - at < PLAIN_EVERY or indent):
                return
        self.told[record.id] = (status, now, record.value)
        parts = [time.strftime("%H:%M:%S"), indent + record.id, record.name, status]
        if record.value is not None:
            pct = percent(record)
            parts.append(f"{record.value}/{record.value_max}" + (f" ({pct}%)" if pct is not None else ""))
            rate = measured_rate(record, item.samples if item else None)
            if rate is not None:
                parts.append(rate_text(rate))
            if record.status.is_terminal and record.start_time and record.end_time:
                parts.append("took " + duration((record.end_time - record.start_time).total_seconds()))
            elif rate and record.value < record.value_max:
                parts.append("ETA " + duration((record.value_max - record.value) / rate))
        click.echo("  ".join(parts))
