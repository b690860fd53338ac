"""A real pseudo-terminal for end-to-end tests: run a command on it and read its screen as a person sees it.

The command gets a pty (``pty.openpty``) of a given size as its stdin and stdout, so ``isatty()`` is true and
it draws as it would for a person; what it writes goes through pyte, a VT100 emulator, whose screen is the
text a terminal would show (escape sequences applied, not matched as bytes).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Mapping, Sequence

import pyte


class Terminal:
    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        columns: int = 100,
        lines: int = 24,
        stderr_to_pipe: bool = True,
    ) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.master = master
        self.process = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE if stderr_to_pipe else slave,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
        os.close(slave)
        self.screen = pyte.Screen(columns, lines)
        self.stream = pyte.ByteStream(self.screen)
        #: every byte the command wrote to the terminal, for recordings
        self.output = bytearray()
        #: (seconds since start, bytes) as they arrived
        self.chunks: list[tuple[float, bytes]] = []
        self.started = time.monotonic()
        self.eof = False

    def pump(self, timeout: float = 0.05) -> None:
        """Read what the command has written (waiting at most ``timeout`` for something)."""
        if self.eof:
            time.sleep(timeout)
            return
        ready, _, _ = select.select([self.master], [], [], timeout)
        while ready:
            try:
                data = os.read(self.master, 65536)
            except OSError as exc:  # EIO: the command closed the terminal
                if exc.errno != errno.EIO:
                    raise
                data = b""
            if not data:
                self.eof = True
                return
            self.output += data
            self.chunks.append((time.monotonic() - self.started, data))
            self.stream.feed(data)
            ready, _, _ = select.select([self.master], [], [], 0)

    @property
    def text(self) -> list[str]:
        """The screen, one string per line, trailing spaces removed."""
        return [line.rstrip() for line in self.screen.display]

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            if predicate(self.text):
                return self.text
            if time.monotonic() > deadline:
                raise AssertionError("the screen never showed what was expected:\n" + "\n".join(self.text))

    def wait(self, timeout: float = 20.0) -> int:
        """The command's exit status, once it has exited and everything it wrote is on the screen."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None or not self.eof:
            self.pump()
            if time.monotonic() > deadline:
                raise AssertionError("the command did not exit:\n" + "\n".join(self.text))
            if self.process.poll() is not None and not self.eof:
                # the command has exited: read what is left, then stop (a grandchild may hold the pty)
                self.pump(0.2)
                break
        return self.process.returncode

    def stderr(self) -> str:
        if self.process.stderr is None:
            return ""
        return self.process.stderr.read().decode()

    def send(self, text: str) -> None:
        """Type ``text`` (``\r`` is Enter, as a terminal sends it)."""
        os.write(self.master, text.encode())

    def interrupt(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if self.process.stderr is not None:
            self.process.stderr.close()
        with contextlib.suppress(OSError):
            os.close(self.master)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
