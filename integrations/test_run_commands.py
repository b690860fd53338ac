"""End to end: real shell commands run through the real ``taskreport`` console script, ``taskreport run``, on the
embedded store and against a real server on loopback. What is checked is what a cron job or a shell script
sees (arguments, environment, output, exit status, signals) and what the task service ends up holding."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from server_fixtures import LiveServer, start_server

import taskreport
from taskreport import TaskRecord

TASKREPORT = str(Path(sys.executable).parent / "taskreport")
PY = sys.executable
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


@dataclass
class Where:
    """Where ``taskreport run`` reports in a test, the environment that points it there, and reading back."""

    env: dict[str, str]
    live: LiveServer | None = None

    def init(self) -> None:
        if self.live is None:
            taskreport.init()
        else:
            taskreport.init(url=self.live.url, token=self.live.token, organization=self.live.organization,
                            project=self.live.project)

    def task(self, name: str) -> TaskRecord:
        """The one task called ``name``."""
        self.init()
        found = list(taskreport.list_tasks(name=name))
        assert len(found) == 1, found
        return found[0]

    def tasks(self, **filters: str) -> list[TaskRecord]:
        self.init()
        return list(taskreport.list_tasks(**filters))


def run(where: Where, *args: str, timeout: float = 60, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """``taskreport run ARGS`` as a shell script would run it."""
    return subprocess.run([TASKREPORT, "run", *args], env=where.env, capture_output=True, timeout=timeout,
                          check=False, stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]


def python(code: str) -> list[str]:
    return [PY, "-c", code]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process reads back from where the commands report: the same home and config file."""
    for key in [k for k in os.environ if k.startswith("TASKREPORT_") and k != "TASKREPORT_SCRYPT_N"]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("TASKREPORT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TASKREPORT_CONFIG", str(tmp_path / "config.toml"))
    yield
    taskreport.shutdown(2)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live, stop = start_server(str(tmp_path / "server.db"))
    yield live
    stop()


def _base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if (not k.startswith("TASKREPORT_") or k == "TASKREPORT_SCRYPT_N")}
    env.update(TASKREPORT_HOME=str(tmp_path / "home"), TASKREPORT_CONFIG=str(tmp_path / "config.toml"),
               LANG="C.UTF-8")
    return env


@pytest.fixture
def embedded(tmp_path: Path) -> Where:
    return Where(_base_env(tmp_path))


@pytest.fixture(params=["embedded", "http"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    env = _base_env(tmp_path)
    if request.param == "embedded":
        return Where(env)
    live: LiveServer = request.getfixturevalue("server")
    env.update(TASKREPORT_URL=live.url, TASKREPORT_TOKEN=live.token, TASKREPORT_ORG=live.organization,
               TASKREPORT_PROJECT=live.project)
    return Where(env, live)


# -- arguments and environment -------------------------------------------------------------------------------
def test_every_argument_reaches_the_command_exactly(embedded: Where) -> None:
    words = ["two  spaces", "$HOME", "*", "", "-x", "--", "--quiet", "'quoted'", 'a"b', "é ☃", "\\n", "~"]
    done = run(embedded, "args", "--", *python("import json, sys; print(json.dumps(sys.argv[1:]))"), *words)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == words
    assert done.stderr == b""
    # without '--', the words after NAME are the command's too, its options included
    done = run(embedded, "no-separator", *python("import sys; print(sys.argv[1:])"), "--timeout", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"['--timeout', '3']\n"


def test_shell_runs_a_pipeline(embedded: Where) -> None:
    done = run(embedded, "--shell", "pipeline", "--", "printf 'b\\na\\n' | sort | tr a-z A-Z; echo \"$0\"")
    assert (done.returncode, done.stdout) == (0, b"A\nB\n/bin/sh\n"), done.stderr
    # without --shell nothing is expanded or piped
    done = run(embedded, "literal", "--", "echo", "a | sort", "$HOME")
    assert done.stdout == b"a | sort $HOME\n"


def test_the_command_gets_the_callers_environment_and_where_to_report(where: Where) -> None:
    env = {**where.env, "MY_VAR": "kept", "PATH": where.env["PATH"] + os.pathsep + "/opt/extra/bin"}
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    done = subprocess.run([TASKREPORT, "run", "env", "--", *python(code)], env=env, capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["PATH"] == env["PATH"] and seen["MY_VAR"] == "kept"
    task = where.task("env")
    assert seen["TASKREPORT_PARENT"] == task.ref
    assert seen["TASKREPORT_HOME"] == env["TASKREPORT_HOME"]
    if where.live is not None:
        assert (seen["TASKREPORT_URL"], seen["TASKREPORT_TOKEN"]) == (where.live.url, where.live.token)
        assert (seen["TASKREPORT_ORG"], seen["TASKREPORT_PROJECT"]) == ("acme", "web")
    else:
        assert "TASKREPORT_URL" not in seen


def test_settings_given_as_options_reach_the_command(server: LiveServer, embedded: Where) -> None:
    """With --url and the rest on the command line only, the command still reports to the same place."""
    code = "import taskreport\nwith taskreport.task('inside'): pass"
    done = subprocess.run(
        [TASKREPORT, "--url", server.url, "--token", server.token, "--org", "acme", "--project", "web",
         "run", "outer", "--", *python(code)],
        env=embedded.env, capture_output=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    at_server = Where(embedded.env, server)
    outer, inside = at_server.task("outer"), at_server.task("inside")
    assert inside.parent == outer.id


def test_a_python_commands_tasks_are_children_of_the_run_task(where: Where) -> None:
    code = (
        "import taskreport\n"
        "@taskreport.track\n"
        "def step(): pass\n"
        "with taskreport.task('load') as t:\n"
        "    t.update(value=3)\n"
        "step()\n"
        "for _ in taskreport.progress(range(5), name='loop'): pass\n"
    )
    done = run(where, "nightly", "--", *python(code))
    assert done.returncode == 0, done.stderr
    nightly = where.task("nightly")
    children = where.tasks(parent=nightly.id)
    assert sorted(c.name for c in children) == ["__main__.step", "load", "loop"]
    assert all(c.status.value == "success" for c in children)
    assert nightly.status.value == "success"


def test_nested_runs(where: Where) -> None:
    """A run inside a run is a child of the outer one; a task made under the inner one nests one level deep,
    as every task does: it becomes the inner run's sibling."""
    code = "import taskreport\nwith taskreport.task('deep'): pass"
    done = run(where, "outer", "--", TASKREPORT, "run", "inner", "--", *python(code))
    assert done.returncode == 0, done.stderr
    outer, inner, deep = where.task("outer"), where.task("inner"), where.task("deep")
    assert outer.parent is None
    assert inner.parent == outer.id and deep.parent == outer.id


# -- exit status -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [0, 3, 255])
def test_the_exit_status_is_the_commands(embedded: Where, code: int) -> None:
    done = run(embedded, f"exit-{code}", "--", "sh", "-c", f"exit {code}")
    assert done.returncode == code
    assert done.stderr == b""
    task = embedded.task(f"exit-{code}")
    assert task.status.value == ("success" if code == 0 else "error")
    assert task.data["exit_code"] == code


def test_exit_status_and_data_over_http(where: Where) -> None:
    done = run(where, "fails", "--tag", "env=prod", "--data", "host=db-1", "--data", "attempt:=2",
               "--external-id", "job-7", "--max-runtime", "60", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")
    task = where.task("fails")
    assert task.status.value == "error"
    assert task.data == {"host": "db-1", "attempt": 2, "exit_code": 3, "output": "out\nerr\n", "output_bytes": 8}
    assert (task.tags, task.external_id, task.max_runtime) == ({"env": "prod"}, "job-7", 60)
    assert task.start_time is not None and task.end_time is not None and task.end_time >= task.start_time


def test_a_command_that_cannot_start(embedded: Where, tmp_path: Path) -> None:
    done = run(embedded, "missing", "--", "no-such-command-here", "arg")
    assert done.returncode == 127
    assert done.stderr == b"taskreport: no-such-command-here: command not found\n"
    script = tmp_path / "not-executable.sh"
    script.write_text("echo hi\n")
    done = run(embedded, "not-exec", "--", str(script))
    assert done.returncode == 126
    assert done.stderr.decode().strip() == f"taskreport: {script}: permission denied"
    task = embedded.task("missing")
    assert (task.status.value, task.data["exit_code"]) == ("error", 127)
    assert task.data["reason"] == "no-such-command-here: command not found"


@pytest.mark.parametrize("name", ["SIGTERM", "SIGKILL", "SIGSEGV"])
def test_a_command_killed_by_a_signal_exits_128_plus_n(embedded: Where, name: str) -> None:
    number = int(getattr(signal, name))
    done = run(embedded, name, "--", *python(f"import os, signal; os.kill(os.getpid(), signal.{name})"))
    assert done.returncode == 128 + number
    task = embedded.task(name)
    assert task.status.value == "error"
    assert (task.data["exit_code"], task.data["signal"]) == (128 + number, name)


# -- signals ---------------------------------------------------------------------------------------------------
COUNTER = """
import os, signal, sys, time
names = sys.argv[1].split(",")
got = []
def on(signum, frame):
    # printed by the loop below: a handler that prints may interrupt a print, which a buffered stdout refuses
    got.append(signal.Signals(signum).name)
for name in names:
    signal.signal(getattr(signal, name), on)
print("ready", os.getpid(), flush=True)
deadline = time.monotonic() + 30
shown = 0
while shown < len(names) and time.monotonic() < deadline:
    while shown < len(got):
        print("got", got[shown], flush=True)
        shown += 1
    time.sleep(0.01)
time.sleep(0.3)  # a moment of cleaning up: run must wait for it
print("bye", ",".join(got), flush=True)
"""


def _start(where: Where, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([TASKREPORT, "run", *args], env=where.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
                            **kwargs)  # type: ignore[call-overload]


def _line(proc: subprocess.Popen[bytes], timeout: float = 30) -> bytes:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output in time"
    return proc.stdout.readline()


def test_every_forwarded_signal_reaches_the_command_once(where: Where) -> None:
    proc = _start(where, "signals", "--", *python(COUNTER), ",".join(FORWARDED))
    try:
        assert _line(proc).startswith(b"ready ")
        for name in FORWARDED:
            proc.send_signal(getattr(signal, name))
            assert _line(proc) == f"got {name}\n".encode()
        assert _line(proc) == f"bye {','.join(FORWARDED)}\n".encode()  # run waited for the command
        assert proc.wait(30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.communicate()
    task = where.task("signals")
    assert task.status.value == "success"
    assert task.data["forwarded_signals"] == list(FORWARDED)


def test_a_forwarded_signal_that_ends_the_command(embedded: Where) -> None:
    proc = _start(embedded, "stopped", "--", *python("import time; print('ready', flush=True); time.sleep(60)"))
    try:
        assert _line(proc) == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.communicate()
    task = embedded.task("stopped")
    assert (task.status.value, task.data["signal"], task.data["forwarded_signals"]) == ("error", "SIGTERM",
                                                                                           ["SIGTERM"])


def test_ctrl_c_on_a_terminal_reaches_the_command_once(embedded: Where, tmp_path: Path) -> None:
    """On a terminal, Ctrl-C goes to the whole foreground process group, the command included: run does not
    pass it on a second time."""
    import fcntl
    import termios

    master, slave = os.openpty()

    def controlling_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [TASKREPORT, "run", "ctrl-c", "--", *python(COUNTER), "SIGINT"], env=embedded.env, stdin=slave,
        stdout=slave, stderr=slave, start_new_session=True, preexec_fn=controlling_terminal,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"ready" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                seen += os.read(master, 4096)
        assert b"ready" in seen, seen
        os.write(master, b"\x03")  # the terminal's interrupt key
        while b"bye" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):
                    seen += os.read(master, 4096)
        assert proc.wait(30) == 0
        time.sleep(0.2)
        while select.select([master], [], [], 0)[0]:
            try:
                more = os.read(master, 4096)
            except OSError:
                break
            if not more:
                break
            seen += more
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)
        os.close(master)
    assert seen.count(b"got SIGINT") == 1, seen
    assert b"bye SIGINT\r\n" in seen
    assert "forwarded_signals" not in embedded.task("ctrl-c").data


# -- output ------------------------------------------------------------------------------------------------------
def test_output_passes_through_byte_for_byte_on_its_own_stream(embedded: Where, tmp_path: Path) -> None:
    out, err = os.urandom(3 * 1024 * 1024 + 17), os.urandom(512 * 1024 + 3)
    (tmp_path / "out").write_bytes(out)
    (tmp_path / "err").write_bytes(err)
    done = run(embedded, "--tail", "100", "bytes", "--", "sh", "-c", f"cat {tmp_path}/out; cat {tmp_path}/err >&2")
    assert done.returncode == 0
    assert hashlib.sha256(done.stdout).digest() == hashlib.sha256(out).digest()
    assert hashlib.sha256(done.stderr).digest() == hashlib.sha256(err).digest()
    task = embedded.task("bytes")
    assert task.data["output_bytes"] == len(out) + len(err)
    assert len(task.data["output"]) <= 100


def test_output_passes_through_live(embedded: Where, tmp_path: Path) -> None:
    """The first line reaches run's reader while the command still runs (it waits for that reader)."""
    flag = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "print('first', flush=True)\n"
        "sys.stderr.write('warning\\n'); sys.stderr.flush()\n"
        f"while not os.path.exists({str(flag)!r}): time.sleep(0.01)\n"
        "print('second', flush=True)\n"
    )
    proc = _start(embedded, "live", "--", *python(code))
    try:
        assert _line(proc) == b"first\n"
        assert proc.stderr is not None and proc.stderr.readline() == b"warning\n"
        assert proc.poll() is None
        flag.touch()
        assert _line(proc) == b"second\n"
        assert proc.wait(30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.communicate()


def test_inherited_descriptors_reach_the_command_and_none_of_runs_own(where: Where, tmp_path: Path) -> None:
    """A ``3>file`` (or a make jobserver, a socket from systemd) reaches the command as it would without run,
    and nothing run opened itself (its pipes, the store, the service's connection) leaks into the command."""
    listing = "import os; print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))"
    script = (
        f"exec 3>{tmp_path}/three\n"
        f"{TASKREPORT} run fds -- sh -c 'echo via three >&3'\n"
        f"{PY} -c \"{listing}\"\n"
        f"{TASKREPORT} run --heartbeat 1 fds -- {PY} -c \"{listing}\"\n"
    )
    done = subprocess.run(["bash", "-c", script], env=where.env, capture_output=True, timeout=60, check=False,
                          close_fds=True)
    assert done.returncode == 0, done.stderr
    bare, under_run = done.stdout.decode().splitlines()
    assert bare == under_run and 3 in json.loads(bare)
    assert (tmp_path / "three").read_text() == "via three\n"


def test_stdin_is_the_commands(embedded: Where) -> None:
    done = subprocess.run([TASKREPORT, "run", "stdin", "--", "sort"], input=b"b\na\n", env=embedded.env,
                          capture_output=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, b"a\nb\n")


def test_a_reader_that_goes_away_ends_the_command_as_it_would_bare(embedded: Where) -> None:
    """``run ... -- yes | head -n 1``: when run's reader leaves, the command's next write fails as it would
    have without run in between (SIGPIPE), and run says so with its exit status."""
    script = f"{TASKREPORT} run yes -- yes | head -n 1; echo \"run: ${{PIPESTATUS[0]}}\"; " \
             "yes | head -n 1; echo \"bare: ${PIPESTATUS[0]}\""
    done = subprocess.run(["bash", "-c", script], env=embedded.env, capture_output=True, timeout=60, check=False)
    assert done.stdout == b"y\nrun: 141\ny\nbare: 141\n", done.stderr
    task = embedded.task("yes")
    assert (task.data["exit_code"], task.data["signal"]) == (141, "SIGPIPE")


def _peak_rss(argv: list[str], env: dict[str, str]) -> tuple[int, int]:
    """(exit status, peak RSS in KiB) of ``argv`` with its output thrown away: the OS's own accounting of the
    process (wait4), which covers the command run runs too (a far smaller process here)."""
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen(argv, env=env, stdout=null, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss


def test_memory_stays_flat_however_much_the_command_prints(embedded: Where) -> None:
    mib = 1024 * 1024
    small_code, small = _peak_rss([TASKREPORT, "run", "small", "--", "head", "-c", str(mib), "/dev/zero"],
                                  embedded.env)
    command = f"head -c {500 * mib} /dev/zero; echo; echo the end"
    big_code, big = _peak_rss([TASKREPORT, "run", "big", "--shell", "--", command], embedded.env)
    assert (small_code, big_code) == (0, 0)
    # 500 MiB went through run: its memory is what it is for one MiB, give or take its buffers
    assert big - small < 16 * 1024, (small, big)
    task = embedded.task("big")
    assert task.data["output_bytes"] == 500 * mib + len("\nthe end\n")
    assert task.data["output"].endswith("\nthe end\n")


# -- progress --------------------------------------------------------------------------------------------------
def test_progress_is_read_from_the_output_while_the_command_runs(where: Where, tmp_path: Path) -> None:
    flag = tmp_path / "go"
    code = (
        "import os, time\n"
        "print('copied 3/10 files', flush=True)\n"
        f"while not os.path.exists({str(flag)!r}): time.sleep(0.01)\n"
        "print('copied 10/10 files', flush=True)\n"
    )
    proc = _start(where, "copy", "--", *python(code))
    try:
        assert _line(proc) == b"copied 3/10 files\n"
        deadline = time.monotonic() + 30
        seen = None
        while time.monotonic() < deadline:
            found = where.tasks(name="copy")
            taskreport.shutdown(1)
            if found and found[0].value == 3:
                seen = found[0]
                break
            time.sleep(0.1)
        assert seen is not None and (seen.value, seen.value_max, seen.status.value) == (3, 10, "processing")
        flag.touch()
        assert proc.wait(30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.communicate()
    task = where.task("copy")
    assert (task.value, task.value_max, task.status.value) == (10, 10, "success")


def test_real_tqdm_output(where: Where) -> None:
    code = (
        "import time, tqdm\n"
        "for _ in tqdm.tqdm(range(40), desc='files', mininterval=0): time.sleep(0.001)\n"
        "bar = tqdm.tqdm(total=3_000_000, unit='B', unit_scale=True, mininterval=0)\n"
        "for _ in range(10): bar.update(150_000)\n"
        "bar.close()\n"
    )
    done = run(where, "tqdm", "--", *python(code))
    assert done.returncode == 0, done.stderr
    assert b"files: 100%" in done.stderr  # passed through as tqdm wrote it
    task = where.task("tqdm")
    assert (task.value, task.value_max) == (1_500_000, 3_000_000)  # the last bar read: 1.50M/3.00M
    assert task.data["output"].splitlines()[0].startswith("files: 100%")


def test_tqdm_bars_without_a_total_and_a_custom_regex(embedded: Where) -> None:
    code = "import tqdm\nfor _ in tqdm.tqdm(iter(range(1234)), mininterval=0): pass\n"
    assert run(embedded, "count", "--", *python(code)).returncode == 0
    assert embedded.task("count").value == 1234
    done = run(embedded, "--progress-regex", r"row (?P<value>\d+) of (?P<max>\d+)", "rows", "--",
               "sh", "-c", "echo 'row 4 of 9'; echo '1/2'")
    assert done.returncode == 0
    assert (embedded.task("rows").value, embedded.task("rows").value_max) == (4, 9)
    assert run(embedded, "--no-progress", "quiet", "--", "echo", "5/6").returncode == 0
    assert embedded.task("quiet").value is None
    assert run(embedded, "--value-max", "1000", "scaled", "--", "echo", "25%").returncode == 0
    assert (embedded.task("scaled").value, embedded.task("scaled").value_max) == (250, 1000)


# -- time limits -------------------------------------------------------------------------------------------------
def test_timeout_terminates_the_command_and_says_why(where: Where) -> None:
    done = run(where, "--timeout", "0.5", "slow", "--", "sleep", "30")
    assert done.returncode == 128 + signal.SIGTERM
    assert done.stderr == b"taskreport: the command ran past --timeout 0.5 s: sent SIGTERM\n"
    task = where.task("slow")
    assert task.status.value == "error"
    assert task.data["timed_out"] is True and task.data["signal"] == "SIGTERM"
    assert task.data["reason"] == "ran past --timeout 0.5 s: sent SIGTERM"


def test_timeout_kills_a_command_that_ignores_sigterm(embedded: Where) -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n" \
           "time.sleep(30)\n"
    started = time.monotonic()
    done = run(embedded, "--timeout", "0.5", "--kill-after", "0.5", "--quiet", "stubborn", "--", *python(code))
    assert done.returncode == 128 + signal.SIGKILL
    assert time.monotonic() - started < 20
    assert (done.stdout, done.stderr) == (b"ready\n", b"")  # --quiet: nothing of run's own
    task = embedded.task("stubborn")
    assert task.data["reason"] == "ran past --timeout 0.5 s: sent SIGTERM, then SIGKILL"
    assert task.data["signal"] == "SIGKILL"


def test_timeout_holds_while_the_reader_of_the_output_is_stuck(embedded: Where) -> None:
    """run is blocked writing to a reader that stopped reading: the command is stopped on time all the same."""
    code = "import os, sys\nprint(os.getpid(), flush=True)\nwhile True: sys.stdout.write('x' * 65536)\n"
    proc = _start(embedded, "--timeout", "1", "stuck", "--", *python(code))
    try:
        pid = int(_line(proc))
        time.sleep(2.5)  # read nothing meanwhile: the pipes fill up and run waits in a write
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
        assert state == "Z", state  # ended (SIGTERM), waiting to be reaped by run once it can go on
        assert proc.stdout is not None
        while proc.stdout.read(1 << 20):
            pass
        assert proc.wait(30) == 128 + signal.SIGTERM
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.communicate()
    assert embedded.task("stuck").data["timed_out"] is True


def test_a_command_that_ends_in_time_with_timeout_set(embedded: Where) -> None:
    done = run(embedded, "--timeout", "30", "quick", "--", "true")
    assert (done.returncode, done.stderr) == (0, b"")
    assert "timed_out" not in embedded.task("quick").data


def test_heartbeat_sets_the_stale_timeout(embedded: Where) -> None:
    assert run(embedded, "--heartbeat", "5", "beats", "--", "true").returncode == 0
    assert embedded.task("beats").stale_timeout == 10


# -- the service down --------------------------------------------------------------------------------------------
def test_the_service_down_changes_nothing_and_the_end_is_spooled(server: LiveServer, tmp_path: Path) -> None:
    proxy = FaultProxy(server.url)
    env = _base_env(tmp_path)
    env.update(TASKREPORT_URL=proxy.url, TASKREPORT_TOKEN=server.token, TASKREPORT_ORG="acme",
               TASKREPORT_PROJECT="web")
    where = Where(env, server)
    try:
        proxy.stop()
        started = time.monotonic()
        done = run(where, "--flush-timeout", "0.5", "offline", "--", "sh", "-c", "echo working; exit 3")
        took = time.monotonic() - started
        assert (done.returncode, done.stdout) == (3, b"working\n")
        lines = done.stderr.decode().splitlines()
        assert lines == [
            f"taskreport: the task's end was not delivered: cannot reach the task service at {proxy.url}: "
            "connection refused (url from TASKREPORT_URL); it is spooled: 'taskreport flush-spool' sends it"
        ]
        assert took < 15
        quiet = run(where, "--flush-timeout", "0.2", "-q", "offline-quiet", "--", "true")
        assert (quiet.returncode, quiet.stderr) == (0, b"")
        assert where.tasks(name="offline") == []
        proxy.start()
        flushed = subprocess.run([TASKREPORT, "flush-spool"], env=env, capture_output=True, timeout=60, check=False)
        assert flushed.returncode == 0, flushed.stderr
    finally:
        proxy.close()
    task = where.task("offline")
    assert (task.status.value, task.data["exit_code"], task.data["output"]) == ("error", 3, "working\n")
    assert where.task("offline-quiet").status.value == "success"


def test_a_signal_cuts_the_wait_for_delivery_short(server: LiveServer, tmp_path: Path) -> None:
    """Once the command has ended, SIGTERM (a shutdown, a supervisor giving up) ends the wait for an unreachable
    service at once: the end is spooled and the exit status is still the command's."""
    proxy = FaultProxy(server.url)
    proxy.stop()
    env = {**_base_env(tmp_path), "TASKREPORT_URL": proxy.url, "TASKREPORT_TOKEN": server.token}
    code = "import os; print(os.getpid(), flush=True); raise SystemExit(6)"
    proc = _start(Where(env), "--flush-timeout", "120", "cut-short", "--", *python(code))
    try:
        pid = int(_line(proc))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until run has reaped the command: it now waits for the service
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 6
        assert time.monotonic() - started < 10
        assert proc.stderr is not None and b"it is spooled" in proc.stderr.read()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.communicate()
        proxy.close()
    assert any((tmp_path / "home" / "spool").iterdir())


def test_parent_option(embedded: Where) -> None:
    embedded.init()
    deploy = taskreport.Task.create("deploy")
    assert taskreport.flush(10)
    deploy_id = deploy.wait_id(10)
    taskreport.shutdown(1)
    assert run(embedded, "--parent", str(deploy_id), "migrate", "--", "true").returncode == 0
    assert embedded.task("migrate").parent == deploy_id


def test_reporting_off_or_misconfigured_still_runs_the_command(embedded: Where, tmp_path: Path) -> None:
    off = {**embedded.env, "TASKREPORT_DISABLED": "1"}
    done = subprocess.run([TASKREPORT, "run", "off", "--", "sh", "-c", "echo ran; exit 4"], env=off,
                          capture_output=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (4, b"ran\n", b"")
    wrong = {**embedded.env, "TASKREPORT_URL": "localhost:8000"}
    done = subprocess.run([TASKREPORT, "run", "wrong", "--", "sh", "-c", "echo ran; exit 5"], env=wrong,
                          capture_output=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (5, b"ran\n")
    assert done.stderr.decode().splitlines() == [
        "taskreport: not reporting: url 'localhost:8000' has no scheme: did you mean 'http://localhost:8000'? "
        "(from TASKREPORT_URL)"
    ]
    broken = tmp_path / "broken.toml"
    broken.write_text("url = [unclosed\n")
    done = subprocess.run([TASKREPORT, "run", "broken", "--", "sh", "-c", "exit 7"], capture_output=True,
                          env={**embedded.env, "TASKREPORT_CONFIG": str(broken)}, timeout=60, check=False)
    assert done.returncode == 7
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"taskreport: not reporting: cannot read config file {broken}")
    assert embedded.tasks() == []
