"""A session's stdio on the agent's side: the pipes (or the pty) between the gRPC stream and the
command, written only as fast as the command reads and read in batches sized for gRPC.

The command gets the other ends (`child`, handed to the enterer and closed here once handed over).
Output is read only as fast as gRPC sends it (the pipe's 1 MiB behind one message in flight), so a
slow client makes the command block on write instead of growing the agent's memory; stdin is written
only as fast as the command reads it, and gRPC's flow control holds back the client.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import struct
import termios
import threading
import time

CHUNK = 1 << 20  # the most one output message carries
BATCH = 256 * 1024  # in a bulk stream, what a message waits for (see Stdio.read_output)
PIPE_SIZE = 1 << 20


class Stdio:
    """The agent's ends of one session's stdin, stdout and stderr, and the bytes that went through."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.outputs: dict[int, str] = {}  # fd -> "stdout" or "stderr"
        self.bytes_in = self.bytes_out = 0
        self.last_activity = time.monotonic()
        self._stdin = -1
        self._lock = threading.Lock()

    def make(self, want_stdin: bool, size: tuple[int, int] | None, child: dict[str, int]) -> None:
        """Make the pipes or the pty; the command's ends go into `child`."""
        if self.tty:
            master, slave = os.openpty()
            child.update(stdin=slave, stdout=slave, stderr=slave)
            os.set_blocking(master, False)
            if size:
                _winsize(master, *size)
            self._stdin = master
            self.outputs[master] = "stdout"
            return
        r, w = os.pipe2(os.O_CLOEXEC)
        child["stdin"] = r
        if want_stdin:
            os.set_blocking(w, False)
            self._stdin = w
        else:
            os.close(w)  # the command reads end-of-file
        for name in ("stdout", "stderr"):
            r, w = os.pipe2(os.O_CLOEXEC)
            child[name] = w
            self.outputs[r] = name
            with contextlib.suppress(OSError):
                fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            os.set_blocking(r, False)

    # -- input from the client
    def write_stdin(self, data: bytes) -> None:
        """Blocks while the command does not read (that is the flow control), but never past close()."""
        self.bytes_in += len(data)
        self.last_activity = time.monotonic()
        view = memoryview(data)
        while view:
            with self._lock:
                if self._stdin < 0:
                    return
                try:
                    view = view[os.write(self._stdin, view):]
                    continue
                except BlockingIOError:
                    poller = select.poll()
                    poller.register(self._stdin, select.POLLOUT)
                except OSError:  # the command closed its stdin or exited
                    return
            poller.poll(100)  # not holding the lock: teardown may close the fd meanwhile

    def close_stdin(self) -> None:
        with self._lock:
            if self._stdin < 0:
                return
            if self.tty:  # a terminal has no end-of-file of its own: send ^D as a user would
                with contextlib.suppress(OSError):
                    os.write(self._stdin, termios.tcgetattr(self._stdin)[6][termios.VEOF])
                return
            os.close(self._stdin)
            self._stdin = -1

    def resize(self, rows: int, cols: int) -> None:
        with self._lock:
            if self.tty and self._stdin >= 0:
                _winsize(self._stdin, rows, cols)

    # -- output to the client
    def read_output(self, fd: int, linger: float = 0.0) -> bytes | None:
        """A chunk, b"" at end of file, None when nothing is ready.

        With `linger` (a bulk stream is going on), keep collecting until BATCH bytes or until
        nothing more came for that long: each gRPC message costs about as much as 30 KiB of copying,
        and a writer like `head` writes 4 KiB at a time."""
        chunks: list[bytes] = []
        size, eof = 0, False
        while size < BATCH and not eof:
            try:
                data = os.read(fd, CHUNK - size)
            except BlockingIOError:
                if not linger or not chunks or not select.select([fd], [], [], linger)[0]:
                    break
                continue
            except OSError as err:
                if err.errno != errno.EIO:  # EIO: a pty whose last slave fd was closed, i.e. end of file
                    raise
                data = b""
            eof = not data  # returned now if nothing was read, else on the next call
            chunks.append(data)
            size += len(data)
            if not linger:
                break
        if not chunks:
            return None
        self.bytes_out += size
        if size:
            self.last_activity = time.monotonic()
        return b"".join(chunks)

    def close(self) -> None:
        with self._lock:
            for fd in {self._stdin, *self.outputs} - {-1}:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._stdin = -1
            self.outputs = {}


def _winsize(fd: int, rows: int, cols: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", min(rows, 0xFFFF), min(cols, 0xFFFF), 0, 0))
