"""Running ``taskreport run``'s command: no shell in between, output passed through live, signals forwarded,
a time limit enforced, and the exit status told as a shell tells it.

The main thread passes the output on: a selector waits on the command's stdout and stderr pipes and on a
wake-up pipe that every signal writes to (``signal.set_wakeup_fd``), SIGCHLD included, so the loop learns at
once that the command exited, whatever thread the kernel delivered the signal to. Each chunk read is written
out whole before the next read, so the command's output is never held back, and memory is bounded by one
chunk. With ``--timeout``, a second thread keeps the time, so that the limit holds even while a write is
stuck on a reader that stopped reading.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import selectors
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any

#: forwarded to the command
FORWARDED = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)
#: sent by the terminal to its whole foreground process group (the command too) when a key is pressed
_KEYBOARD = frozenset(getattr(signal, name) for name in ("SIGINT", "SIGQUIT") if hasattr(signal, name))
#: the most read from a pipe at once
CHUNK = 256 * 1024
#: the pipes' size: a command that prints fast writes more between two of our reads
PIPE_SIZE = 1024 * 1024
#: full reads taken one after the other before the loop looks whether the command has exited
_READS_IN_A_ROW = 16
#: longest sleep of the loop: a safety net under the wake-up pipe, never needed in practice
_LONGEST_WAIT = 1.0
_DEAD = frozenset({errno.EPIPE, errno.EBADF, errno.EINVAL})


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclasses.dataclass
class Outcome:
    """How the command ended."""

    #: what ``run`` exits with: the command's status, 128+N when signal N ended it (as a shell reports it)
    exit_code: int
    #: the signal that ended the command, if one did
    signal: int | None = None
    #: signals received by ``run`` and passed on to the command (names, in order)
    forwarded: list[str] = dataclasses.field(default_factory=list)
    #: the time limit was reached; ``sent`` says what was sent for it
    timed_out: bool = False
    sent: list[str] = dataclasses.field(default_factory=list)
    #: the command could not be started (not found, not executable): why
    not_started: str | None = None


class Child:
    """The command, run to its end. ``on_output(stream, chunk)`` sees every chunk (stream 1 or 2) after it was
    written out; ``on_note(text)`` hears of what ``run`` did on its own (a time limit)."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        capture: bool = True,
        on_output: Callable[[int, bytes], None] | None = None,
        timeout: float | None = None,
        kill_after: float = 10.0,
        on_note: Callable[[str], None] | None = None,
        stdout: int = 1,
        stderr: int = 2,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.capture = capture
        self.on_output = on_output
        self.timeout = timeout
        self.kill_after = kill_after
        self.on_note = on_note
        self.targets = {1: stdout, 2: stderr}
        self.proc: subprocess.Popen[bytes] | None = None
        self.outcome = Outcome(0)
        self._keyboard_seen: set[int] = set()
        self._early: list[int] = []

    # -- signals ------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGCHLD:
            return  # the loop polls the command when the wake-up pipe says so
        proc = self.proc
        if proc is None:
            self._early.append(signum)  # forwarded once the command exists
            return
        self._forward(proc, signum)

    def _forward(self, proc: subprocess.Popen[bytes], signum: int) -> None:
        if signum in _KEYBOARD and signum not in self._keyboard_seen and _terminal_sent_it(proc.pid):
            # Ctrl-C on the terminal went to the command as well: passing it on would make two. A second one
            # is passed on (it may come from `kill`, which only reaches us).
            self._keyboard_seen.add(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
        if len(self.outcome.forwarded) < 20:
            self.outcome.forwarded.append(signal_name(signum))

    # -- running --------------------------------------------------------------------------------------------
    def run(self) -> Outcome:
        """Start the command and wait for it to end, forwarding signals meanwhile."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous: dict[int, Any] = {}
        old_wakeup = -1
        try:
            old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
            for signum in (*FORWARDED, signal.SIGCHLD):
                current = signal.getsignal(signum)
                if current == signal.SIG_IGN and signum != signal.SIGCHLD:
                    continue  # ignored when we started (nohup, a background job): the command inherits that
                previous[signum] = current
                signal.signal(signum, self._on_signal)
            if not self._start():
                return self.outcome
            for signum in self._early:
                self._forward(self.proc, signum)  # type: ignore[arg-type]
            self._loop(wake_r)
            return self.outcome
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            signal.set_wakeup_fd(old_wakeup)
            os.close(wake_r)
            os.close(wake_w)

    def _start(self) -> bool:
        pipe = subprocess.PIPE if self.capture else None
        try:
            # close_fds=False: descriptors run inherited (a `3>file`, a make jobserver, a socket from systemd)
            # reach the command as they would without run; run's own are opened non-inheritable (PEP 446)
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=pipe, stderr=pipe, close_fds=False)
        except OSError as exc:
            self.outcome.not_started = _why_not_started(self.argv[0], exc)
            # what a shell exits with: 127 not found, 126 found but not executable
            self.outcome.exit_code = 127 if isinstance(exc, FileNotFoundError) else 126
            return False
        return True

    def _loop(self, wake_r: int) -> None:
        proc = self.proc
        assert proc is not None
        selector = selectors.DefaultSelector()
        selector.register(wake_r, selectors.EVENT_READ, 0)
        pipes: dict[int, int] = {}
        for stream, pipe in ((1, proc.stdout), (2, proc.stderr)):
            if pipe is not None:
                fd = pipe.fileno()
                os.set_blocking(fd, False)
                if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux
                    with contextlib.suppress(OSError):
                        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
                selector.register(fd, selectors.EVENT_READ, stream)
                pipes[stream] = fd
        ended = threading.Event()
        watch = None
        if self.timeout is not None:
            # on a thread of its own: a time limit must hold even while our output is stuck (a reader that
            # stopped reading blocks us in a write, as it would block the command without us)
            watch = threading.Thread(target=self._watch_time, args=(proc, ended), name="taskreport-run-timeout",
                                     daemon=True)
            watch.start()
        try:
            while proc.poll() is None:
                for key, _ in selector.select(_LONGEST_WAIT):
                    if key.data == 0:
                        _drain(wake_r)
                        continue
                    fd = pipes[key.data]
                    more = self._pass_on(key.data, fd)
                    for _ in range(_READS_IN_A_ROW):  # a full read: more is likely waiting (within reason:
                        if more is not True:  # the loop must get back to seeing the command exit)
                            break
                        more = self._pass_on(key.data, fd)
                    if more is None:
                        selector.unregister(pipes.pop(key.data))
            # the command has exited: what it wrote is in the pipes now; read it, but don't wait for anything
            # that kept the pipes open (a daemon it started)
            for stream, fd in list(pipes.items()):
                while self._pass_on(stream, fd) is True:  # a short read emptied it
                    pass
        finally:
            ended.set()
            if watch is not None:
                watch.join()
            selector.close()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        code = proc.returncode
        if code < 0:
            self.outcome.signal = -code
            code = 128 - code
        self.outcome.exit_code = code

    def _pass_on(self, stream: int, fd: int) -> bool | None:
        """Read a chunk from the command's pipe and write it out. True if the read was full (more may be
        waiting), False if not; None when the pipe is done: at its end, or when our own output is gone (we
        stop reading it, so the command's next write fails as it would have)."""
        try:
            chunk = os.read(fd, CHUNK)
        except BlockingIOError:
            return False
        if not chunk:
            return None
        if not _write_all(self.targets[stream], chunk):
            self._close_stream(stream)
            return None
        if self.on_output is not None:
            self.on_output(stream, chunk)
        return len(chunk) == CHUNK

    def _close_stream(self, stream: int) -> None:
        proc = self.proc
        pipe = None if proc is None else (proc.stdout if stream == 1 else proc.stderr)
        if pipe is not None:
            pipe.close()  # our reader of it goes: the command's next write fails as it would have

    def _watch_time(self, proc: subprocess.Popen[bytes], ended: threading.Event) -> None:
        """SIGTERM at --timeout, SIGKILL --kill-after later, unless the command ended first."""
        assert self.timeout is not None
        if ended.wait(self.timeout) or not self._time_is_up(proc, signal.SIGTERM):
            return
        if self.on_note is not None:
            self.on_note(f"the command ran past --timeout {self.timeout:g} s: sent SIGTERM")
        if ended.wait(self.kill_after) or not self._time_is_up(proc, signal.SIGKILL):
            return
        if self.on_note is not None:
            self.on_note(f"the command did not end within {self.kill_after:g} s of SIGTERM: sent SIGKILL")

    def _time_is_up(self, proc: subprocess.Popen[bytes], signum: int) -> bool:
        """Send ``signum`` for the time limit; False if the command had ended already."""
        if proc.poll() is not None:
            return False
        self.outcome.timed_out = True
        self.outcome.sent.append(signal_name(signum))
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
        return True


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 4096):
            pass


def _write_all(fd: int, data: bytes) -> bool:
    """Write all of ``data`` to ``fd`` (waiting while it is full); False if it can't be written at all."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:  # our output is a non-blocking pipe that is full: wait for room
            _wait_writable(fd)
            continue
        except OSError as exc:
            if exc.errno in _DEAD:
                return False
            raise
        view = view[written:]
    return True


def _wait_writable(fd: int) -> None:
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_WRITE)
        selector.select(_LONGEST_WAIT)


def _terminal_sent_it(pid: int) -> bool:
    """Whether a keyboard signal may have come from our terminal, which sends it to its whole foreground
    process group: true when we and the command are both in that group."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False  # no controlling terminal: somebody sent it to us alone
    try:
        foreground = os.tcgetpgrp(fd)
        return foreground == os.getpgrp() and os.getpgid(pid) == foreground
    except OSError:
        return False
    finally:
        os.close(fd)


def _why_not_started(program: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"{program}: command not found" if os.sep not in program else f"{program}: no such file"
    if isinstance(exc, PermissionError):
        return f"{program}: permission denied"
    return f"{program}: cannot run it: {exc.strerror or exc}"
