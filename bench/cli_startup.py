"""How long the ``taskreport`` command takes to start, against a bare ``python -c pass``, in the same run.

Run: ``python bench/cli_startup.py [ROUNDS]`` (default 20). Each round runs every command once, in turn
(so a machine that slows down slows all of them alike), after two warm-up rounds; every run is a new process
with an empty home and config. Prints each command's median and best wall time, the median of its per-round
ratio to ``python -c pass``, what it adds to it, and the command's own share of ``--help`` (what it takes over
``import taskreport``: click and the command group, no subcommand module).
Targets: ``taskreport --help`` at most 150 ms; ``import taskreport`` at most 60 ms (the library's figure, printed
here for context).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
WARMUP = 2
SCRIPT = str(Path(sys.executable).parent / "taskreport")
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import taskreport'": [sys.executable, "-c", "import taskreport"],
    "taskreport --version": [SCRIPT, "--version"],
    "taskreport --help": [SCRIPT, "--help"],
    "taskreport list --help": [SCRIPT, "list", "--help"],
}
TARGETS = {"taskreport --help": 0.150, "python -c 'import taskreport'": 0.060}


def once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode()}")
    return elapsed


def main() -> None:
    if not os.path.exists(SCRIPT):
        raise SystemExit(f"no console script at {SCRIPT}: pip install -e .")
    home = tempfile.mkdtemp(prefix="taskreport-bench-")
    # PYTHONDONTWRITEBYTECODE would make every start compile every module again: not what users run
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TASKREPORT_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(TASKREPORT_HOME=home, TASKREPORT_CONFIG=os.path.join(home, "config.toml"))
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for round_ in range(WARMUP + ROUNDS):
        for name, argv in COMMANDS.items():
            elapsed = once(argv, env)
            if round_ >= WARMUP:
                times[name].append(elapsed)
    base = times["python -c pass"]
    print(f"{ROUNDS} rounds after {WARMUP} warm-up rounds; wall time of a whole process (ms)")
    print(f"{'command':32} {'median':>8} {'best':>8} {'x pass':>8} {'added':>8}  target")
    for name, runs in times.items():
        ratio = statistics.median(r / b for r, b in zip(runs, base, strict=True))
        added = statistics.median(r - b for r, b in zip(runs, base, strict=True))
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            verdict = f"<= {target * 1000:.0f} ms: {'met' if statistics.median(runs) <= target else 'NOT met'}"
        print(
            f"{name:32} {statistics.median(runs) * 1000:8.1f} {min(runs) * 1000:8.1f} {ratio:8.2f} "
            f"{added * 1000:8.1f}  {verdict}"
        )
    own = statistics.median(
        h - i for h, i in zip(times["taskreport --help"], times["python -c 'import taskreport'"], strict=True)
    )
    print(f"the command's own share of --help (over import taskreport, median of pairs): {own * 1000:.1f} ms")


if __name__ == "__main__":
    main()
