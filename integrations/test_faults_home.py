"""A user's program whose TASKREPORT_HOME can not be written (a read-only or a full filesystem), reporting to
a server that is down or to the embedded store that lives in that home: the program must run to its end
and exit with its own status, in about its exit timeout, with one line saying what was lost and why (no
traceback, no line per task or per round), and leave no half-written spool file behind.

Root ignores file modes, so as root the home is a tiny tmpfs mounted read-only, or filled to ENOSPC; as
another user it is a directory with mode 0555, and the full filesystem is skipped."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from _faults import clean_env, free_port

EXIT_TIMEOUT = 0.5
USER_PROGRAM = textwrap.dedent(f"""
    import atexit
    import sys
    import time

    # registered before taskreport's exit hook, so it runs after it: how long the exit took
    atexit.register(lambda: print(f"exit took {{time.monotonic() - ended:.2f}}", flush=True))

    import taskreport

    taskreport.init(flush_interval=0.05, exit_timeout={EXIT_TIMEOUT})

    @taskreport.track
    def job(n):
        for _ in taskreport.progress(range(50), name=f"part {{n}}"):
            pass

    for n in range(20):
        job(n)
    print("work done", flush=True)
    ended = time.monotonic()
    sys.exit(3)
""")


def _mount_tmpfs(path: Path, options: str) -> bool:
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, timeout=10, check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10, check=False)


@contextlib.contextmanager
def unwritable(kind: str, path: Path) -> Iterator[str]:
    """Make ``path`` a directory that can't be written (``read-only`` or ``full``); yields the error the OS
    gives for a write there."""
    path.mkdir()
    if os.geteuid() != 0:
        if kind == "full":
            pytest.skip("a full filesystem needs a tmpfs of its own, which only root can mount")
        path.chmod(0o555)
        try:
            yield "Permission denied"
        finally:
            path.chmod(0o755)
        return
    if not _mount_tmpfs(path, "ro,size=64k" if kind == "read-only" else "size=64k"):
        pytest.skip("running as root, where file modes stop no write, and mount -t tmpfs is not permitted here")
    try:
        if kind == "full":
            filler = path / "filler"
            with contextlib.suppress(OSError), filler.open("wb") as fh:
                while True:
                    fh.write(bytes(4096))
                    fh.flush()
            # one page left: a spool file gets its first bytes written, and ENOSPC on the rest
            os.truncate(filler, filler.stat().st_size - 4096)
        yield "Read-only file system" if kind == "read-only" else "No space left on device"
    finally:
        _unmount(path)


@pytest.mark.parametrize("kind", ["read-only", "full"])
@pytest.mark.parametrize("target", ["server down", "embedded store"])
def test_an_unwritable_home_costs_the_program_nothing_but_one_line(kind: str, target: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with unwritable(kind, home) as reason:
        extra = {}
        if target == "server down":
            # a port nobody listens on: connection refused at once
            extra = {"TASKREPORT_URL": f"http://127.0.0.1:{free_port()}", "TASKREPORT_TOKEN": "trk_faults"}
        done = subprocess.run([sys.executable, "-c", USER_PROGRAM], env=clean_env(home, **extra),
                              capture_output=True, text=True, timeout=60, check=False)
        spool = home / "spool"
        left = sorted(p.name for p in spool.iterdir()) if spool.exists() else []

    assert done.returncode == 3, done.stderr
    work_done, exit_took = done.stdout.splitlines()
    assert work_done == "work done"
    # the exit hook gives up delivering after its timeout, and does not wait on the disk either
    assert float(exit_took.split()[-1]) < EXIT_TIMEOUT + 3, exit_took
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert all(line.startswith("taskreport: ") for line in lines), done.stderr
    lost = [line for line in lines if "could not be delivered nor spooled" in line]
    assert len(lost) == 1 and reason in lost[0], done.stderr
    # besides it, at most the one (rate-limited) line about the delivery that failed
    assert len(lines) <= 2, done.stderr
    assert left == [], left
