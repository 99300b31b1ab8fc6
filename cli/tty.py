"""The local terminal for `exec -t`: raw mode while a session runs (restored whatever happens), its
size, and a callback on every resize (SIGWINCH), as `kubectl exec -it` does."""

from __future__ import annotations

import contextlib
import fcntl
import signal
import struct
import termios
import tty
from collections.abc import Callable, Iterator
from typing import Any


def size(fd: int) -> tuple[int, int] | None:
    """(rows, cols) of the terminal on fd, or None when it is not one (or reports no size)."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return (rows, cols) if rows and cols else None


@contextlib.contextmanager
def raw(fd: int) -> Iterator[None]:
    """Every key goes to the remote terminal as typed (^C included); the old mode comes back after."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def on_resize(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` (in the main thread) whenever the terminal is resized."""

    def handler(signum: int, frame: Any) -> None:
        callback()

    old = signal.signal(signal.SIGWINCH, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, old)
