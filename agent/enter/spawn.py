"""Starting the command: find the program as execvp would, and hand it to the session's reaper.

The reaper is agent/enter/reaper.c, a small static program the enterer's child execs from a sealed memfd
(so nothing of the node's, no interpreter and no library, is mapped in the one stage the pod can
see). The program is found here, in the enterer, inside the container's root with its PATH and
ids, so that "not found" and "not executable" are told apart; the reaper gets the outcome as its
plan, written on a pipe: NUL-separated path, tty, error, error code, argc, argv, envc, environment.
The helper loads the reaper once (load_reaper, into a sealed memfd) and every session's reaper is
exec'd from that copy (exec_reaper).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys

from ..core.plan import Plan

EXIT_NOT_FOUND, EXIT_CANNOT_EXECUTE = 127, 126  # as shells report them
REAPER_ENV = "NSINSPECT_REAPER"  # the reaper's path, for the fork server to load
_reaper: list[int] = []  # the reaper binary's sealed memfd (sealed_copy), loaded once by load_reaper


def default_reaper() -> str:
    """Where hack/setup and the image's Dockerfile put the reaper: libexec/ of the Python prefix."""
    return os.environ.get(REAPER_ENV) or os.path.join(sys.prefix, "libexec", "nsinspect-reaper")


def find_program(name: str, env: dict[bytes, bytes]) -> str:
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


def reaper_plan(plan: Plan, env: dict[bytes, bytes]) -> bytes:
    """Find the program (as the target would: its root, PATH and credentials) and make the
    reaper's plan; a failure is the plan too, for the reaper to report as the command's."""
    try:
        path, error, code = find_program(plan.argv[0], env), "", 0
    except OSError as err:
        path, error = "", _exec_message(plan, env, err)
        code = EXIT_NOT_FOUND if err.errno == errno.ENOENT else EXIT_CANNOT_EXECUTE
    fields = [os.fsencode(path), b"1" if plan.tty else b"0", error.encode(errors="replace"), str(code).encode(),
              str(len(plan.argv)).encode(), *(os.fsencode(a) for a in plan.argv),
              str(len(env)).encode(), *(k + b"=" + v for k, v in env.items())]
    return b"".join(f + b"\0" for f in fields)


def _exec_message(plan: Plan, env: dict[bytes, bytes], err: OSError) -> str:
    name = plan.argv[0]
    if err.errno == errno.ENOENT and "/" not in name:
        path = env.get(b"PATH", os.defpath.encode()).decode(errors="replace")
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


def load_reaper(path: str) -> None:
    """Load the reaper once per helper: every session's reaper is exec'd from this sealed copy."""
    _reaper.append(sealed_copy(path, "nsinspect-exec"))


def reaper_loaded() -> bool:
    return bool(_reaper)


def exec_reaper(plan_fd: int, status_fd: int) -> None:
    """In the enterer's child: become the session's reaper (agent/enter/reaper.c, from its sealed memfd)
    with the session's stdio as 0-2, its plan on 3 and the status socket on 4, and nothing else.
    Only ever returns by raising."""
    if not _reaper:
        raise OSError(errno.ENOENT, "no session reaper loaded")
    exe, plan, status = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (_reaper[0], plan_fd, status_fd))
    os.dup2(plan, 3)  # dup2 makes them inheritable; everything else is close-on-exec
    os.dup2(status, 4)
    os.execve(exe, ["nsinspect-exec"], {})
