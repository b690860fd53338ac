"""``taskreport watch`` driven with CliRunner (plain output: not a terminal), and its bars' layout.

The bars on a real terminal are tested end to end in ``integrations/test_terminal_watch.py``.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque

import pytest
from click.testing import CliRunner
from clihelp import one_line_error

import taskreport
from taskreport._models import TaskRecord
from taskreport.cli import main
from taskreport.cli._bars import Row, Style, cells, duration, eta_text, fit, layout, measured_rate, rate_text


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def made(*specs: tuple[str, str]) -> list[str]:
    tasks = [taskreport.Task.create(name, status=status, value=10, value_max=20) for name, status in specs]
    assert taskreport.flush(5)
    ids = [str(t.id) for t in tasks]
    taskreport.shutdown()
    return ids


def test_watch_ended_tasks_exits_at_once(runner: CliRunner) -> None:
    ok, bad = made(("export", "success"), ("import", "error"))
    result = runner.invoke(main, ["watch", ok])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert ok in lines[0] and "export  success  10/20 (50%)" in lines[0]
    assert lines[-1] == "1 watched task(s) succeeded"
    result = runner.invoke(main, ["watch", ok, bad])
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert line == f"taskreport: 1 of 2 watched task(s) did not succeed: import ({bad}) error"


def test_watch_follows_until_the_end(runner: CliRunner) -> None:
    task = taskreport.Task.create("slow job", status="processing", value=0, value_max=4)
    assert taskreport.flush(5)
    task_id = str(task.id)

    def work() -> None:
        for value in range(1, 5):
            time.sleep(0.2)
            task.update(value=value)
            taskreport.flush(5)
        task.success()
        taskreport.flush(5)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        result = runner.invoke(main, ["watch", task_id, "--interval", "0.05"])
    finally:
        worker.join()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "processing" in lines[0]
    assert "success  4/4 (100%)" in lines[-2] and "took " in lines[-2]


def test_watch_the_running_ones_with_children(runner: CliRunner) -> None:
    parent = taskreport.Task.create("nightly", status="processing")
    child = taskreport.Task.create("step", parent=parent, status="processing")
    taskreport.Task.create("finished", status="success")
    assert taskreport.flush(5)

    def finish() -> None:
        time.sleep(0.3)
        child.success()
        parent.error()
        taskreport.flush(5)

    worker = threading.Thread(target=finish)
    worker.start()
    try:
        result = runner.invoke(main, ["watch", "--interval", "0.05"])
    finally:
        worker.join()
    assert result.exit_code == 1
    out = result.stdout
    assert "finished" not in out
    # the child is shown under its parent, not watched on its own
    assert f"  {child.id}  step  processing" in out and f"  {child.id}  step  success" in out
    assert f"1 of 1 watched task(s) did not succeed: nightly ({parent.id}) error" in result.stderr


def test_watch_with_nothing_running(runner: CliRunner) -> None:
    made(("done", "success"))
    result = runner.invoke(main, ["watch"])
    assert result.exit_code == 0
    assert result.stdout == "" and "no pending or running tasks to watch" in result.stderr
    result = runner.invoke(main, ["watch", "--status", "error"])
    assert "no error tasks to watch" in result.stderr


def test_watch_by_status(runner: CliRunner) -> None:
    made(("done", "success"), ("broken", "error"))
    result = runner.invoke(main, ["watch", "--status", "success"])
    assert result.exit_code == 0
    assert "done" in result.stdout and "broken" not in result.stdout


def test_watch_timeout(runner: CliRunner) -> None:
    (task_id,) = made(("forever", "processing"))
    result = runner.invoke(main, ["watch", task_id, "--interval", "0.05", "--timeout", "0.3"])
    assert result.exit_code == 1
    assert one_line_error(result.stderr) == (
        f"taskreport: 1 watched task(s) still running after 0.3 s: forever ({task_id})"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["watch", "nope"], "no task with id 'nope' in project local/default"),
        (["watch", "x", "--status", "error"], "give task ids or --status, not both"),
    ],
)
def test_watch_errors(runner: CliRunner, args: list[str], expected: str) -> None:
    result = runner.invoke(main, args)
    assert result.exit_code in (1, 2)
    assert expected in one_line_error(result.stderr)


# -- the bars ---------------------------------------------------------------------------------------------------
def record(**fields: object) -> TaskRecord:
    body: dict[str, object] = {"id": "t1", "name": "job", "status": "processing", **fields}
    return TaskRecord.from_api(body)


def test_cells_and_fit_count_wide_characters() -> None:
    assert cells("abc") == 3 and cells("画像") == 4 and cells("e\u0301") == 1
    assert fit("abcdef", 4) == "abc…" and fit("ab", 4) == "ab  "
    assert fit("画像画像", 5) == "画像…" and fit("画像画像", 4) == "画… "


@pytest.mark.parametrize(("seconds", "shown"), [(0, "0:00"), (5.4, "0:05"), (83, "1:23"), (3723, "1:02:03"),
                                                (90000, "1d01h"), (-3, "0:00")])
def test_duration(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


@pytest.mark.parametrize(("rate", "shown"), [(None, "-"), (1234.5, "1234/s"), (12.34, "12.3/s"), (0.5, "30.0/min"),
                                             (0.001, "3.6/h"), (0.0, "0/s")])
def test_rate_text(rate: float | None, shown: str) -> None:
    assert rate_text(rate) == shown


def test_rate_from_samples_then_from_the_service_clock() -> None:
    running = record(value=50, value_max=100)
    assert measured_rate(running, deque([(10.0, 10), (12.0, 30)])) == 10.0
    assert eta_text(running, 10.0) == "ETA 0:05"
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    since_start = record(value=50, start_time=start.isoformat(), updated=(start + dt.timedelta(seconds=10)).isoformat())
    assert measured_rate(since_start, deque([(1.0, 50)])) == 5.0
    # a first second says little: no rate yet
    early = record(value=50, start_time=start.isoformat(), updated=(start + dt.timedelta(seconds=0.2)).isoformat())
    assert measured_rate(early, None) is None and eta_text(early, None) == "ETA -"
    ended = record(status="success", value=100, start_time=start.isoformat(),
                   end_time=(start + dt.timedelta(seconds=20)).isoformat())
    assert measured_rate(ended, deque([(0.0, 0), (1.0, 100)])) == 5.0
    assert eta_text(ended, 5.0) == "took 0:20"


@pytest.mark.parametrize("width", [20, 40, 60, 80, 132])
def test_layout_never_wider_than_the_terminal(width: int) -> None:
    rows = [Row("a long task name that goes on and on", "post_processing", 0.5, "50%", "500/1000", "12.3/s",
                "ETA 1:02:03"), Row("画像の処理", "success", 1.0, "100%", "3/3", "3.0/s", "took 0:01")]
    for line in layout(rows, width, Style(color=False)):
        assert cells(line) <= width - 1, line
    lines = layout(rows, width, Style(color=True))
    if width >= 80:
        assert all("\x1b[" in line and "█" in line for line in lines)


def test_layout_bar_reflects_the_fraction() -> None:
    rows = [Row("job", "processing", 0.25, "25%", "1/4", "1.0/s", "ETA 0:03")]
    (line,) = layout(rows, 100, Style(color=False))
    bar = line.split()[1]
    assert bar.count("█") * 4 == len(bar) and set(bar) == {"█", "░"}
    (line,) = layout(rows, 100, Style(color=False, unicode=False))
    assert "#" in line and "-" in line
