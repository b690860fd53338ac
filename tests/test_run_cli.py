"""``taskreport run``'s command line: where options go, what is refused before anything runs (one line, status
2), and its help. What a run does is tested end to end in ``integrations/test_run_commands.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from clihelp import one_line_error, run

from taskreport.cli import COMMANDS, main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run"], "Missing argument 'NAME'"),
        (["run", "job"], "Missing argument '-- CMD [ARGS]...'"),
        (["run", "job", "--quiet", "true"], "'--quiet' after NAME: put run's options before NAME, and '--' before"),
        (["run", "--timeout", "0", "job", "--", "true"], "'0' is not a number of seconds (more than 0)"),
        (["run", "--timeout", "soon", "job", "--", "true"], "'soon' is not a number of seconds"),
        (["run", "--kill-after", "-1", "job", "--", "true"], "'-1' is not a number of seconds (0 or more)"),
        (["run", "--tail", "-1", "job", "--", "true"], "--tail"),
        (["run", "--tail", "999999999", "job", "--", "true"], "out of range"),
        (["run", "--tag", "env:", "job", "--", "true"], "'env:' is not KEY=VALUE"),
        (["run", "--data", "x", "job", "--", "true"], "'x' is not KEY=TEXT or KEY:=JSON"),
        (["run", "--data", "n:=nope", "job", "--", "true"], "the value is not JSON"),
        (["run", "--value-max", "0", "job", "--", "true"], "--value-max"),
        (["run", "--max-runtime", "abc", "job", "--", "true"], "'abc' is not a whole number"),
        (["run", "--progress-regex", "(", "job", "--", "true"], "--progress-regex"),
        (["run", "--progress-regex", r"\d+", "job", "--", "true"], "it has no group"),
        (["run", "x" * 256, "--", "true"], "Invalid value for 'NAME': must have at most 255 characters"),
        (["run", "--tag", "k=" + "v" * 300, "job", "--", "true"], "Invalid value for '--tag'"),
        (["run", "--parent", "", "job", "--", "true"], "Invalid value for '--parent'"),
        (["run", "--nope", "job", "--", "true"], "--nope"),
    ],
)
def test_bad_command_lines_are_one_line_usage_errors(runner: CliRunner, args: list[str], expected: str) -> None:
    result = runner.invoke(main, args)
    assert result.exit_code == 2, result.output
    line = one_line_error(result.stderr)
    assert expected in line, line
    assert line.endswith("(see 'main run --help')") or line.endswith("(see 'main --help')"), line


def test_a_refused_command_line_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    done = run(["run", "--tag", "bad", "job", "--", "touch", str(marker)])
    assert done.returncode == 2
    assert one_line_error(done.stderr).startswith("taskreport: Invalid value for '--tag'")
    assert not marker.exists()


def test_options_may_come_between_name_and_the_separator(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    done = run(["run", "job", "--timeout", "30", "--tag", "env=test", "--", "touch", str(marker)])
    assert (done.returncode, done.stderr) == (0, "")
    assert marker.exists()


def test_help_and_its_listing(runner: CliRunner) -> None:
    result = runner.invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    assert "Usage: main run [OPTIONS] NAME -- CMD [ARGS]..." in result.output
    for option in ("--shell", "--timeout", "--kill-after", "--heartbeat", "--max-runtime", "--tag", "--data",
                   "--value-max", "--external-id", "--parent", "--tail", "--progress-regex", "--no-progress",
                   "--flush-timeout", "--quiet"):
        assert option in result.output
    assert COMMANDS["run"].help == "Run a command and report it as a task."
    listing = runner.invoke(main, ["--help"]).output
    assert "run          Run a command and report it as a task." in listing
