"""Starting the command: find the program as execvp would, then posix_spawn it.

The spawn is prepared in the enterer (whose pages are warm) and run by the reaper, so no Python
runs between fork and exec; only a terminal needs a fork, to make it the controlling tty. Apart
from enter.py because this is the one part that creates the command's process.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import sys
import termios
from typing import TYPE_CHECKING

from nsinspect.agent.syscalls import _libc

if TYPE_CHECKING:  # enter.py imports this module: its types are for the checker only
    from nsinspect.agent.enter import Entry

EXIT_NOT_FOUND, EXIT_CANNOT_EXECUTE = 127, 126  # as shells report them


def _find(name: str, env: dict[bytes, bytes]) -> str:
    """execvp's search, done here so that "not found" and "not executable" are told apart."""
    if "/" in name:
        return name
    denied = False
    for folder in env.get(b"PATH", os.defpath.encode()).decode(errors="surrogateescape").split(":"):
        path = os.path.join(folder or ".", name)
        if os.path.isfile(path):
            if os.access(path, os.X_OK):
                return path
            denied = True
    raise OSError(errno.EACCES if denied else errno.ENOENT, name)


_SPAWN_SETSIGDEF, _SPAWN_SETSIGMASK, _SPAWN_SETSID = 0x04, 0x08, 0x80
_SIGSET_BYTES = 128
# Every signal but KILL and STOP, glibc's internal 32 and 33 included: glibc 2.36's posix_spawn
# leaves those two ignored in the child, and os.posix_spawn cannot name them (sigaddset refuses).
_ALL_DEFAULT = (((1 << 64) - 1) & ~(1 << (signal.SIGKILL - 1)) & ~(1 << (signal.SIGSTOP - 1))).to_bytes(
    8, sys.byteorder) + bytes(_SIGSET_BYTES - 8)


def _returned(err: int, path: str = "") -> None:
    """The posix_spawn family returns an errno instead of setting it."""
    if err:
        raise OSError(err, os.strerror(err), *((path,) if path else ()))


class Spawn:
    """A posix_spawn prepared ahead (in the enterer, whose pages are warm) and run by the reaper:
    vfork, so no page tables copied and no Python in the child; a new session leader with stdio on
    `stdio`, every signal at its default and none blocked, as a freshly started process has them."""

    def __init__(self, path: str, argv: list[str], env: dict[bytes, bytes], stdio: list[int]) -> None:
        self.path = os.fsencode(path)
        self.actions = ctypes.create_string_buffer(512)  # posix_spawn_file_actions_t: 80 bytes on glibc
        self.attr = ctypes.create_string_buffer(512)  # posix_spawnattr_t: 336 bytes
        _returned(_libc.posix_spawn_file_actions_init(self.actions))
        _returned(_libc.posix_spawnattr_init(self.attr))
        for target, fd in enumerate(stdio):
            _returned(_libc.posix_spawn_file_actions_adddup2(self.actions, fd, target))
        _returned(_libc.posix_spawnattr_setflags(self.attr, ctypes.c_short(_SPAWN_SETSIGDEF | _SPAWN_SETSIGMASK
                                                                           | _SPAWN_SETSID)))
        _returned(_libc.posix_spawnattr_setsigdefault(self.attr, _ALL_DEFAULT))
        _returned(_libc.posix_spawnattr_setsigmask(self.attr, bytes(_SIGSET_BYTES)))
        self.argv = (ctypes.c_char_p * (len(argv) + 1))(*[os.fsencode(a) for a in argv], None)
        self.env = (ctypes.c_char_p * (len(env) + 1))(*[k + b"=" + v for k, v in env.items()], None)

    def run(self) -> int:
        """The command's PID; OSError when the exec failed."""
        pid = ctypes.c_int()
        try:
            _returned(_libc.posix_spawn(ctypes.byref(pid), self.path, self.actions, self.attr, self.argv, self.env),
                      os.fsdecode(self.path))
        finally:
            _libc.posix_spawn_file_actions_destroy(self.actions)
            _libc.posix_spawnattr_destroy(self.attr)
        return pid.value


def prepare_spawn(s: Entry) -> None:
    """Find the program (as the target would: its root, PATH and credentials) and prepare the spawn;
    a failure is kept, for the reaper to report as the command's."""
    try:
        path = _find(s.plan.argv[0], s.env)
        if not s.plan.tty:
            s.spawn = Spawn(path, list(s.plan.argv), s.env, [s.fds[name] for name in ("stdin", "stdout", "stderr")])
        else:
            s.spawn = path
    except OSError as err:
        s.spawn = err


def spawn(s: Entry) -> int:
    """Start the command: the prepared posix_spawn, or for a terminal a fork that makes it the
    controlling tty of a new session."""
    if s.spawn is None:
        prepare_spawn(s)
    if isinstance(s.spawn, OSError):
        raise s.spawn
    if isinstance(s.spawn, Spawn):
        return s.spawn.run()
    assert isinstance(s.spawn, str)
    path, argv = s.spawn, list(s.plan.argv)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            fcntl.ioctl(s.fds["stdin"], termios.TIOCSCTTY, 0)
            for i in range(3):
                os.dup2(s.fds["stdin"], i)
            signal.set_wakeup_fd(-1)
            for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            os.execve(path, argv, s.env)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.write(err_w, str(err.errno).encode())
        finally:
            os._exit(EXIT_CANNOT_EXECUTE)
    os.close(err_w)
    failed = os.read(err_r, 64)
    os.close(err_r)
    if failed:
        os.waitpid(pid, 0)
        raise OSError(int(failed), os.strerror(int(failed)))
    return pid


def _exec_message(s: Entry, err: OSError) -> str:
    name = s.plan.argv[0]
    if err.errno == errno.ENOENT and "/" not in name:
        path = s.env.get(b"PATH", os.defpath.encode()).decode(errors="replace")
        return f'"{name}": executable file not found in $PATH ({path})'
    return f'"{name}": {os.strerror(err.errno or errno.EIO)}'
