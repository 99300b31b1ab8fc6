"""Starting the command: find the program as execvp would, and hand it to the session's reaper.

The reaper is agent/enter/reaper.c, a small static program the enterer's child execs from a sealed memfd
(so nothing of the node's, no interpreter and no library, is mapped in the one stage the pod can
see). The program is found here, in the enterer, inside the container's root with its PATH and
ids, so that "not found" and "not executable" are told apart; the reaper gets the outcome as its
plan, written on a pipe: NUL-separated path, tty, error, error code, argc, argv, envc, environment.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # enter.py imports this module: its types are for the checker only
    from .helper import Entry

EXIT_NOT_FOUND, EXIT_CANNOT_EXECUTE = 127, 126  # as shells report them
REAPER_ENV = "NSINSPECT_REAPER"  # the reaper's path, for the fork server to load


def default_reaper() -> str:
    """Where hack/setup and the image's Dockerfile put the reaper: libexec/ of the Python prefix."""
    return os.environ.get(REAPER_ENV) or os.path.join(sys.prefix, "libexec", "nsinspect-reaper")


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


def prepare_spawn(s: Entry) -> None:
    """Find the program (as the target would: its root, PATH and credentials) and write the
    reaper's plan; a failure is the plan too, for the reaper to report as the command's."""
    try:
        path, error, code = _find(s.plan.argv[0], s.env), "", 0
    except OSError as err:
        path, error = "", _exec_message(s, err)
        code = EXIT_NOT_FOUND if err.errno == errno.ENOENT else EXIT_CANNOT_EXECUTE
    fields = [os.fsencode(path), b"1" if s.plan.tty else b"0", error.encode(errors="replace"), str(code).encode(),
              str(len(s.plan.argv)).encode(), *(os.fsencode(a) for a in s.plan.argv),
              str(len(s.env)).encode(), *(k + b"=" + v for k, v in s.env.items())]
    s.reaper_plan = b"".join(f + b"\0" for f in fields)


def _exec_message(s: Entry, err: OSError) -> str:
    name = s.plan.argv[0]
    if err.errno == errno.ENOENT and "/" not in name:
        path = s.env.get(b"PATH", os.defpath.encode()).decode(errors="replace")
        return f'"{name}": executable file not found in $PATH ({path})'
    return f'"{name}": {os.strerror(err.errno or errno.EIO)}'


def sealed_copy(path: str, name: str) -> int:
    """A program in a sealed memfd, to exec instead of its file: the exe of what runs from it cannot
    be written (close-on-exec: execveat of an ELF file needs no path). For the reaper (once per
    helper) and the helper's own interpreter (once per agent)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            copied = 0
            while copied < size:
                copied += os.sendfile(fd, f.fileno(), copied, size - copied)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                    | fcntl.F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd
