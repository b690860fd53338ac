"""What ``taskreport run x -- true`` adds to running ``true`` bare, in the same run, and taskbadger's ``run``
for comparison.

Run: ``python bench/run_overhead.py [ROUNDS]`` (default 20; ``--no-taskbadger`` skips installing it). Each
round runs every command once, in turn, as a new process (so that a machine that slows down slows all of them
alike), after two warm-up rounds. Printed per command: the median and best wall time, and the median over the
rounds of what it adds to ``true`` run in the same round, the median CPU time (user + system, from the
operating system's accounting of the finished process: less swayed by a busy machine than wall time); for
``taskreport run``, the median ratio to taskbadger's ``run`` in the same round. Target:
``taskreport run x -- true`` adds at most 120 ms, set when taskbadger's ``run`` took 336 ms: on a machine of
another speed, the same target is a ratio of at most 0.36 to taskbadger's ``run`` measured in the same run.

- ``taskreport run`` on the embedded store (the default with no URL) and over HTTP to a real ``taskreport``
  server on loopback (SQLite); each run's task is checked to be there, ended, at the end.
- ``python -c "import http.client, click"``: the imports alone of the two libraries ``run`` over HTTP is
  built on (its HTTP client and its command line), a floor for that row; and ``python -c "import requests"``,
  what requests would add (the HTTP client until 2026-12, and still the one used where a proxy is set).
- ``taskbadger run`` (taskbadger 2.6.0, installed into a temporary virtual environment) against the same
  server, which speaks the same API. Its CLI does not start with the current typer and click (its ``run`` fails
  on its own ``--action`` default), so typer 0.12.5 and click 8.1.7 are installed beside it. Without network
  access to the package index, or with ``--no-taskbadger``, the row says why it is missing.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _server import serve

ROUNDS = int(next((a for a in sys.argv[1:] if a.isdigit()), "20"))
WARMUP = 2
TARGET = 0.120
#: taskbadger 2.6's run when the target was set (issue 12): the target as a share of it, for machines of
#: another speed
TASKBADGER_THEN = 0.336
TASKREPORT = str(Path(sys.executable).parent / "taskreport")
TASKBADGER_PINS = ["taskbadger[cli]==2.6.0", "typer==0.12.5", "click==8.1.7"]


def install_taskbadger(where: Path) -> tuple[str | None, str]:
    """(path of the taskbadger script, or None; a note)."""
    if "--no-taskbadger" in sys.argv:
        return None, "skipped (--no-taskbadger)"
    venv = where / "taskbadger-venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *TASKBADGER_PINS], check=True,
                       capture_output=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        output = getattr(exc, "stderr", b"") or b""
        last = output.decode(errors="replace").strip().splitlines()[-1:] or [str(exc)]
        return None, f"could not be installed: {last[0]}"
    return str(venv / "bin" / "taskbadger"), f"{' '.join(TASKBADGER_PINS)} in a temporary venv"


def once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user and system time of the process and what it waited for)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    if stderr and "taskreport" in argv[0]:
        raise SystemExit(f"{' '.join(argv)} said: {stderr.decode()}")
    return elapsed, usage.ru_utime + usage.ru_stime


def main() -> None:
    if not os.path.exists(TASKREPORT):
        raise SystemExit(f"no console script at {TASKREPORT}: pip install -e .")
    true = shutil.which("true") or "/bin/true"
    work = Path(tempfile.mkdtemp(prefix="taskreport-bench-run-"))
    taskbadger, taskbadger_note = install_taskbadger(work)
    url, token, counting, stop = serve(str(work / "server.db"))
    # the commands as a user has them: bytecode cached (a developer's environment may say not to write it)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TASKREPORT_", "TASKBADGER_"))
            and k != "PYTHONDONTWRITEBYTECODE"}
    embedded = {**base, "TASKREPORT_HOME": str(work / "home"), "TASKREPORT_CONFIG": str(work / "none.toml")}
    http = {**embedded, "TASKREPORT_URL": url, "TASKREPORT_TOKEN": token, "TASKREPORT_ORG": "bench",
            "TASKREPORT_PROJECT": "bench"}
    badger = {**base, "HOME": str(work), "TASKBADGER_HOST": url, "TASKBADGER_ORG": "bench",
              "TASKBADGER_PROJECT": "bench", "TASKBADGER_API_KEY": token}
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "true": ([true], base),
        "python -c pass": ([sys.executable, "-c", "pass"], base),
        # what run over HTTP can't go below with its HTTP client and its CLI
        "import http.client, click": ([sys.executable, "-c", "import http.client, click"], base),
        "import requests": ([sys.executable, "-c", "import requests"], base),
        "taskreport run (embedded)": ([TASKREPORT, "run", "embedded", "--", true], embedded),
        "taskreport run (http)": ([TASKREPORT, "run", "http", "--", true], http),
    }
    if taskbadger is not None:
        commands["taskbadger run (http)"] = ([taskbadger, "run", "badger", "--", true], badger)
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    try:
        for round_ in range(WARMUP + ROUNDS):
            for name, (argv, env) in commands.items():
                elapsed, used = once(argv, env)
                if round_ >= WARMUP:
                    times[name].append(elapsed)
                    cpu[name].append(used)
        requests = counting.count
        checked = check(url, token, work, WARMUP + ROUNDS, taskbadger is not None)
    finally:
        stop()
    report(times, cpu, taskbadger_note, requests, checked)
    shutil.rmtree(work, ignore_errors=True)


def check(url: str, token: str, work: Path, runs: int, badger: bool) -> str:
    """Every run left its task, ended: the work measured was really done."""
    import taskreport

    counts = []
    for name, settings in (("http", {"url": url, "token": token, "organization": "bench", "project": "bench"}),
                           ("embedded", {"home": str(work / "home")}),
                           *((("badger", {"url": url, "token": token, "organization": "bench",
                                           "project": "bench"}),) if badger else ())):
        taskreport.init(**settings)  # type: ignore[arg-type]
        found = list(taskreport.list_tasks(name=name))
        ended = sum(1 for t in found if t.status.value == "success")
        taskreport.shutdown(1)
        if ended != runs:
            raise SystemExit(f"expected {runs} ended tasks named {name!r}, found {ended} of {len(found)}")
        counts.append(f"{name} {ended}")
    return ", ".join(counts)


def report(times: dict[str, list[float]], cpu: dict[str, list[float]], taskbadger_note: str, requests: int,
           checked: str) -> None:
    bare = times["true"]
    print(f"{ROUNDS} rounds after {WARMUP} warm-up rounds; a whole process each (ms): wall time, and CPU time "
          "(user + system)")
    print(f"{'command':28} {'median':>8} {'best':>8} {'added':>8} {'cpu':>8}  target / comparison")
    badger = times.get("taskbadger run (http)")
    for name, runs in times.items():
        added = statistics.median(r - b for r, b in zip(runs, bare, strict=True))
        note = ""
        if name == "import http.client, click":
            note = "the floor of run over HTTP: its libraries' imports alone"
        if name == "import requests":
            note = "requests alone (the HTTP client where a proxy is set)"
        if name.startswith("taskreport run"):
            note = f"adds <= {TARGET * 1000:.0f} ms: {'met' if added <= TARGET else 'NOT met'}"
            if badger is not None:
                ratio = statistics.median(r / b for r, b in zip(runs, badger, strict=True))
                share = TARGET / TASKBADGER_THEN
                note += f"; {ratio:.2f}x taskbadger's run (<= {share:.2f}x: {'met' if ratio <= share else 'NOT met'})"
        print(f"{name:28} {statistics.median(runs) * 1000:8.1f} {min(runs) * 1000:8.1f} {added * 1000:8.1f} "
              f"{statistics.median(cpu[name]) * 1000:8.1f}  {note}")
    if badger is None:
        print(f"taskbadger run: {taskbadger_note}")
    else:
        print(f"taskbadger: {taskbadger_note}")
    print(f"server requests: {requests}; ended tasks checked: {checked}")
    print("'added': median over the rounds of (the command's wall time - true's in the same round)")


if __name__ == "__main__":
    main()
