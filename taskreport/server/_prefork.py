"""Several server processes on one port: ``taskreport serve --workers N``.

The parent binds the port, forks the workers and supervises them; the kernel hands each new connection to
one worker (on Linux each worker listens on a socket of its own: see ``SPREAD_CONNECTIONS`` in
``cli._serve``). uvicorn's own supervisor spawns fresh interpreters and pickles its config into them, which
our config (an app object, a protocol class made at run time) does not survive; forking after the imports
also makes each worker start in milliseconds. A worker builds its own app, so no connection, thread or pool
is shared across processes; what they share is the database (PostgreSQL, or SQLite's file and its locks).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any, NoReturn

logger = logging.getLogger("taskreport.server")

#: a worker that dies this soon after starting, this many times in a row, means it cannot start at all
_QUICK_DEATH = 2.0
_QUICK_DEATHS = 3


def serve_forked(run_worker: Callable[[], None], workers: int) -> int:
    """Run ``run_worker()`` in ``workers`` forked processes until SIGINT or SIGTERM; a worker that dies is
    started again. Returns the exit status for the parent: 0 when stopped, 1 when workers keep failing."""
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(running):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    running: dict[int, float] = {}
    quick_deaths = 0
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for _ in range(workers):
            pid = _fork(run_worker)
            running[pid] = time.monotonic()
        while running:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries wait() itself
                continue
            started = running.pop(pid, None)
            if started is None or stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < _QUICK_DEATH else 0
            if quick_deaths >= _QUICK_DEATHS:
                logger.error("taskreport server: workers keep exiting at start (last: %s); stopping", code)
                stop(signal.SIGTERM, None)
                _reap(running)
                return 1
            logger.warning("taskreport server: worker %d exited (%s); starting another", pid, code)
            running[_fork(run_worker)] = time.monotonic()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _fork(run_worker: Callable[[], None]) -> int:
    pid = os.fork()
    if not pid:
        _worker(run_worker)
    return pid


def _worker(run_worker: Callable[[], None]) -> NoReturn:
    # the worker: default signal handling (uvicorn installs its own), then never back into the parent's code
    code = 0
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        run_worker()
    except KeyboardInterrupt:
        pass
    except BaseException:
        logger.exception("taskreport server: a worker failed")
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


def _reap(running: dict[int, float], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        for pid in list(running):
            with contextlib.suppress(ChildProcessError):
                done, _status = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
            running.pop(pid, None)
        time.sleep(0.02)
    for pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

