"""The one walk over every process of the node: /proc's numeric entries, read through a /proc dir fd.

Every pass the agent makes over the node goes through here (the node map, the outsider pass, the
cgroup fallback of list_pods), so there is one place that knows what /proc lists: one entry per
process (threads are not listed, and lsns counts processes too), named by its decimal PID. This API
is stable; callers elsewhere are tuned against it, so change it only together with all of them.

It costs the callers nothing they would not pay in a loop of their own. Two shapes:

- `process_names(proc, skip)`: the names alone, from one listdir of the dir fd, for a caller that
  reads through the /proc fd itself (`readlink(name + "/ns/net", dir_fd=proc)`: no extra open);
- `each_process(visit, proc)`: opens /proc/PID once per process, calls `visit(pid, dirfd)` and
  closes it, for a caller that reads several files of one process, which must then all come from
  that process (an fd of /proc/PID fails once its process is gone, never reaching a newer one that
  reused the PID). One Python call per process costs about 0.1 us against the 2-3 us of the open
  and close a caller needs anyway.

A process gone before its directory opens, or refusing it, is skipped; so is one that goes while
`visit` reads it (an OSError with a "gone" errno). Any other error is the caller's to see.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection

from .procns import GONE_ERRNOS, proc_fd

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # how a /proc/PID directory is opened
_SKIP_OPEN = (FileNotFoundError, ProcessLookupError, PermissionError)


def process_names(proc: int | None = None, skip: Collection[str] = ()) -> list[str]:
    """The process entries of /proc (decimal PIDs as /proc spells them, the names openat and
    readlinkat take), but those in `skip`; `proc` is a dir fd of a procfs (default: procns.proc_fd())."""
    names = os.listdir(proc_fd() if proc is None else proc)
    if skip:
        return [n for n in names if n.isdigit() and n not in skip]
    return [n for n in names if n.isdigit()]


def each_process(visit: Callable[[int, int], object], proc: int | None = None) -> None:
    """`visit(pid, dirfd)` for every process, with `dirfd` its /proc/PID directory, open only for the call."""
    fd = proc_fd() if proc is None else proc
    open_, close, skip = os.open, os.close, _SKIP_OPEN
    for name in process_names(fd):
        try:
            dirfd = open_(name, DIR_FLAGS, dir_fd=fd)
        except skip:
            continue
        try:
            visit(int(name), dirfd)
        except OSError as err:
            if err.errno not in GONE_ERRNOS:
                raise
        finally:
            close(dirfd)
