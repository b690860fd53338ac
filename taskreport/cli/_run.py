"""``taskreport run NAME -- CMD [ARGS]...``: run a command as a task, for cron jobs and shell scripts.

The task is created (by reference, without waiting on the network) before the command starts, and the
command's environment names it (``TASKREPORT_PARENT``) along with where to report, so that a Python program
using taskreport reports its tasks as children of this one. The command runs with no shell in between, its
output passes through live and byte for byte, signals are forwarded, and ``run`` exits with the command's
status: reporting never changes it, even with the service down (the task's end is then spooled).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from .._config import ENV
from .._errors import TaskReportError, ValidationError
from .._validation import validate_task
from ._group import explain
from ._params import Seconds, WholeNumber, data_pairs, tag_pairs
from ._run_child import Child, Outcome, signal_name
from ._run_output import ProgressReader, Reading, Tail, compile_progress_regex, default_reading
from ._settings import Settings, settings_of, url_problem

if TYPE_CHECKING:
    import taskreport

#: bytes of output kept in the task's data by default, and at most
TAIL_DEFAULT = 10_000
TAIL_MAX = 256 * 1024
#: the option that sets each task field, for errors that name a field
_FIELD_OPTIONS = {"name": "NAME", "tags": "--tag", "data": "--data", "value_max": "--value-max",
                  "external_id": "--external-id", "max_runtime": "--max-runtime", "parent": "--parent"}
#: ``run`` ends its process once the command's end is reported (False: it returns, for running it in-process)
ENDS_PROCESS = True
#: signals that cut the wait for delivery short once the command has ended
_HURRY = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


class RunCommand(click.Command):
    """Options go before NAME, or between NAME and ``--``; after NAME with no ``--``, and after ``--``,
    every word is the command's (so that its own options are never taken for ours)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.allow_interspersed_args = "--" in args and self._options_and_name(ctx, args[: args.index("--")])
        rest = super().parse_args(ctx, args)
        command = ctx.params.get("command") or ()
        if not ctx.allow_interspersed_args and command and command[0].startswith("-") and command[0] != "-":
            raise click.UsageError(
                f"{command[0]!r} after NAME: put run's options before NAME, and '--' before the command", ctx
            )
        return rest

    def _options_and_name(self, ctx: click.Context, head: Sequence[str]) -> bool:
        """Whether ``head`` is our options and exactly one word (NAME)."""
        takes_value: dict[str, bool] = {}
        for param in self.get_params(ctx):
            if isinstance(param, click.Option):
                for opt in (*param.opts, *param.secondary_opts):
                    takes_value[opt] = not param.is_flag
        words = 0
        tokens = iter(head)
        for token in tokens:
            if token.startswith("-") and token != "-":
                if takes_value.get(token.split("=", 1)[0]) and "=" not in token:
                    next(tokens, None)
            else:
                words += 1
        return words == 1


def _regex(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return compile_progress_regex(value)
    except (re.error, ValueError) as exc:
        raise click.BadParameter(f"{value!r}: {exc}") from None


class Notes:
    """What ``run`` says of its own, one ``taskreport: ...`` line each on stderr; nothing with --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def say(self, text: str) -> None:
        if not self.quiet:
            with contextlib.suppress(OSError):  # stderr is gone: nobody to tell
                click.echo(f"taskreport: {text}", err=True)


@click.command(cls=RunCommand)
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
@click.option("--shell", is_flag=True, help="Run the command line with /bin/sh -c (for pipes, globs, $VARS).")
@click.option("--timeout", type=Seconds(positive=True), metavar="SECONDS",
              help="Stop the command after this long: SIGTERM, then SIGKILL after --kill-after.")
@click.option("--kill-after", type=Seconds(), default=10.0, show_default=True, metavar="SECONDS",
              help="Seconds between SIGTERM and SIGKILL when --timeout is reached.")
@click.option("--heartbeat", type=Seconds(positive=True), metavar="SECONDS",
              help="Touch the task this often while the command runs (stale after twice as long quiet).")
@click.option("--max-runtime", type=WholeNumber(min=1), metavar="SECONDS", help="Expected longest run (a field).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Set a tag (repeatable).")
@click.option("--data", "data", multiple=True, metavar="KEY=TEXT|KEY:=JSON",
              help="Set a key of the task's data: text, or with := a JSON value (repeatable).")
@click.option("--value-max", type=WholeNumber(min=1), help="The value that means done (progress read from the "
              "output is scaled onto it).")
@click.option("--external-id", metavar="TEXT", help="Your own id for the task.")
@click.option("--parent", metavar="ID", help="The task this one is part of [default: the one $TASKREPORT_PARENT "
              "names, if set].")
@click.option("--tail", type=WholeNumber(min=0, max=TAIL_MAX), default=TAIL_DEFAULT, show_default=True,
              metavar="BYTES", help="Bytes of the output's end kept in the task's data (0: none).")
@click.option("--progress-regex", callback=_regex, metavar="REGEX",
              help="Read progress with this regex: groups value and max (or percent), else group 1 (and 2).")
@click.option("--no-progress", is_flag=True, help="Don't read progress from the output.")
@click.option("--flush-timeout", type=Seconds(), default=5.0, show_default=True, metavar="SECONDS",
              help="At the end, wait this long for the service to take the task's end, then spool it.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing of run's own (the command's output still shows).")
@click.pass_context
def run(
    ctx: click.Context,
    /,
    name: str,
    command: tuple[str, ...],
    shell: bool,
    timeout: float | None,
    kill_after: float,
    heartbeat: float | None,
    max_runtime: int | None,
    tags: tuple[str, ...],
    data: tuple[str, ...],
    value_max: int | None,
    external_id: str | None,
    parent: str | None,
    tail: int,
    progress_regex: Any,
    no_progress: bool,
    flush_timeout: float,
    quiet: bool,
) -> None:
    """Run a command and report it as a task.

    \b
        taskreport run "nightly backup" -- rsync -a /srv/ backup:/srv/
        taskreport run --timeout 3600 --tag env=prod "import" -- ./import.py --all
        taskreport run --shell "rotate logs" -- 'gzip -9 /var/log/app/*.log && echo done'

    The command gets this environment plus TASKREPORT_PARENT (a Python program's tasks become children of
    this one). Its output passes through; progress (N/M, N%, tqdm bars) is read from it; run exits with the
    command's status (128+N if signal N ended it).
    """
    fields: dict[str, Any] = {"status": "processing"}
    for key, value in (("value_max", value_max), ("external_id", external_id), ("max_runtime", max_runtime)):
        if value is not None:
            fields[key] = value
    if tags:
        fields["tags"] = tag_pairs(tags)
    if data:
        fields["data"] = data_pairs(data)
    try:
        validate_task({"name": name, **fields, **({"parent": parent} if parent is not None else {})}, partial=False)
    except ValidationError as exc:
        raise _invalid(exc) from None
    argv = ["/bin/sh", "-c", " ".join(command)] if shell else list(command)
    notes = Notes(quiet)
    settings = settings_of(ctx)
    task = _start(settings, notes, name, fields, heartbeat, parent, flush_timeout)
    capture = task is not None and (tail > 0 or not no_progress)
    reporter = _Reporter(task, tail, None if no_progress else (progress_regex or default_reading), value_max)
    child = Child(argv, _environment(settings, task), capture=capture, on_output=reporter.output,
                  timeout=timeout, kill_after=kill_after, on_note=notes.say)
    outcome = child.run()
    if outcome.not_started:
        click.echo(f"taskreport: {outcome.not_started}", err=True)  # what a shell would have said
    if task is not None:
        reporter.end(outcome, timeout)
        _finish(settings, notes, flush_timeout)
    if ENDS_PROCESS:
        _end_process(outcome.exit_code)
    ctx.exit(outcome.exit_code)


def _end_process(code: int) -> None:
    """Exit now with ``code``: the command has ended and its task's end is with the service (or spooled).
    Nothing left to do justifies the interpreter's teardown, nor closing the store (SQLite checkpoints its
    write-ahead log when its last connection closes), and nothing in it can change the exit status."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _invalid(exc: ValidationError) -> click.BadParameter:
    field = (exc.attr or "").split(".", 1)[0]
    return click.BadParameter(exc.detail, param_hint=f"'{_FIELD_OPTIONS.get(field, field or 'input')}'")


def _start(
    settings: Settings,
    notes: Notes,
    name: str,
    fields: dict[str, Any],
    heartbeat: float | None,
    parent: str | None,
    flush_timeout: float,
) -> taskreport.Task | None:
    """The run's task, created without I/O; None when reporting is off or can't be set up (the command runs
    all the same, and a note says why)."""
    try:
        config = settings.config
        if config.disabled:
            return None
        problem = url_problem(config.url) if config.url and not config.embedded else None
        if problem:
            notes.say(f"not reporting: url {problem} (from {settings.source('url')})")
            return None
        settings.connect(spool=True, strict=False, exit_timeout=flush_timeout)
        import taskreport

        options: dict[str, Any] = {"heartbeat": heartbeat}
        if parent is not None:
            options["parent"] = parent
        return taskreport.Task.create(name, **fields, **options)
    except (TaskReportError, click.ClickException) as exc:
        text = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        notes.say(f"not reporting: {text}")
        return None


def _environment(settings: Settings, task: taskreport.Task | None) -> dict[str, str]:
    """The caller's environment, plus where a taskreport inside the command reports and under which task."""
    env = dict(os.environ)
    if task is None:
        return env
    config = settings.config
    for key, variable in ENV.items():
        value = getattr(config, key)
        if value:
            env[variable] = str(value)
    env["TASKREPORT_HOME"] = str(config.home)
    env["TASKREPORT_PARENT"] = task.ref
    return env


class _Reporter:
    """Turns the command's output and end into task updates. Updates only merge into the task's pending
    state (no I/O): the library's flusher coalesces and sends them."""

    def __init__(self, task: taskreport.Task | None, tail: int, read_line: Any, value_max: int | None) -> None:
        self.task = task
        self.tail = Tail(tail) if tail else None
        self.readers = {1: ProgressReader(read_line), 2: ProgressReader(read_line)} if read_line else None
        self.value_max = value_max
        self.last: tuple[int, int | None] | None = None

    def output(self, stream: int, chunk: bytes) -> None:
        if self.tail is not None:
            self.tail.feed(chunk)
        if self.readers is not None:
            reading = self.readers[stream].feed(chunk)
            if reading is not None:
                self._progress(reading)

    def _progress(self, reading: Reading) -> None:
        value, maximum = reading
        if self.value_max is not None:
            # the user said what done is: the output's fraction is scaled onto it
            if maximum:
                value = min(self.value_max, value * self.value_max // maximum)
            maximum = None
        if (value, maximum) == self.last or self.task is None:
            return
        self.last = (value, maximum)
        if maximum is None:
            self.task.update(value=value)
        else:
            self.task.update(value=value, value_max=maximum)

    def end(self, outcome: Outcome, timeout: float | None) -> None:
        assert self.task is not None
        if self.readers is not None:
            for reader in self.readers.values():
                reading = reader.end()
                if reading is not None:
                    self._progress(reading)
        data: dict[str, Any] = {"exit_code": outcome.exit_code}
        if outcome.signal is not None:
            data["signal"] = signal_name(outcome.signal)
        if outcome.forwarded:
            data["forwarded_signals"] = outcome.forwarded
        if outcome.timed_out:
            data["timed_out"] = True
            data["reason"] = f"ran past --timeout {timeout:g} s: sent {', then '.join(outcome.sent)}"
        if outcome.not_started:
            data["reason"] = outcome.not_started
        if self.tail is not None:
            data["output"] = self.tail.text()
            data["output_bytes"] = self.tail.total
        ok = outcome.exit_code == 0 and not outcome.timed_out
        self.task.update(status="success" if ok else "error", data=data)


def _finish(settings: Settings, notes: Notes, flush_timeout: float) -> None:
    """Deliver the task's end within ``flush_timeout`` (a signal cuts the wait short), spool what is left,
    and say so if it was not delivered, or if the service refused part of it."""
    import taskreport

    hurry: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        hurry.append(signum)

    previous = {}
    for signum in _HURRY:
        if signal.getsignal(signum) != signal.SIG_IGN:
            previous[signum] = signal.signal(signum, on_signal)
    client = taskreport.get_client()
    records = settings.log.records if settings.log is not None else []
    try:
        deadline = time.monotonic() + flush_timeout
        delivered = client.flush(0)
        while not delivered and not hurry:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            delivered = client.flush(min(0.1, remaining))
        told = list(records)  # what delivery said, before closing adds its own words on the spool
        if not (delivered and ENDS_PROCESS and _spool_is_empty(client.config.home / "spool")):
            delivered = client.close(0) and delivered  # spools what is left, releases what it claimed
        # else: everything is delivered and no spool file was claimed: the process ends without closing
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    retried = [error for error in map(_retry_of, told) if error is not None]
    said = [r.getMessage().removeprefix("taskreport: ") for r in told if _retry_of(r) is None]
    if not delivered:
        if retried:
            why = explain(retried[-1], settings)
        else:
            why = said[-1] if said else f"{settings.where()} did not take it within {flush_timeout:g} s"
        kept = "it is spooled: 'taskreport flush-spool' sends it" if client.stats()["spooled"] else "it is lost"
        notes.say(f"the task's end was not delivered: {why}; {kept}")
    elif said:
        notes.say(said[-1])  # delivered, but the service refused something (a parent, a field)


def _spool_is_empty(directory: Path) -> bool:
    """No spool file at all, so none claimed by this process either (a claim renames the file in place)."""
    try:
        return not any(True for _ in os.scandir(directory))
    except FileNotFoundError:
        return True


def _retry_of(record: logging.LogRecord) -> TaskReportError | None:
    """The error of a "delivery failed; will retry" record."""
    args = record.args
    if isinstance(args, tuple) and args and isinstance(args[0], TaskReportError):
        return args[0]
    return None
