"""Files of a container read from the node through its processes' /proc/PID/root: the user and
group names of its processes come from each container's own /etc/passwd and /etc/group.

They are opened below /proc/PID/root with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), so
neither "..", absolute symlinks nor /proc magic links lead out of the container. Nothing is written
(O_NOATIME).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

from ..core.process import Member
from ..linux.syscalls import checked, libc
from ..procfs import procns

NAMES_LIMIT = 4 << 20  # an /etc/passwd bigger than this is not read


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_SYS_OPENAT2 = 437  # the same number on every architecture (added after the syscall table unification)
_RESOLVE_NO_MAGICLINKS, _RESOLVE_IN_ROOT = 0x02, 0x10


def _open_in_root(rootfd: int, path: str, flags: int) -> int:
    """openat2 with the path confined to rootfd; a plain O_NOFOLLOW walk (no symlinks at all) where
    the kernel lacks openat2 (< 5.6)."""
    how = _OpenHow(flags=flags, mode=0, resolve=_RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    try:
        return checked(libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(rootfd), ctypes.c_char_p(path.encode()),
                                    ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))), f"openat2 {path}")
    except OSError as err:
        if err.errno != errno.ENOSYS:
            raise
    parts = path.strip("/").split("/")
    dirfd = os.dup(rootfd)
    try:
        for part in parts[:-1]:
            nextfd = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            os.close(dirfd)
            dirfd = nextfd
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=dirfd)
    finally:
        os.close(dirfd)


def read_in_root(pid: int, start_ticks: int, path: str, limit: int = NAMES_LIMIT) -> bytes | None:
    """A regular file below the root of process `pid` (if it is still the one that started at
    `start_ticks`), read without following anything out of that root and without touching atime;
    None when it is missing, not a regular file, too big, or reached only through a link out."""
    try:
        dirfd = os.open(str(pid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=procns.proc_fd())
    except OSError:
        return None
    fd = rootfd = -1
    try:
        if start_ticks and int(procns.stat_fields(procns.read_at(dirfd, "stat", 4096))[19]) != start_ticks:
            return None
        rootfd = os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dirfd)
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK  # a FIFO must not block us
        try:
            fd = _open_in_root(rootfd, path, flags | os.O_NOATIME)
        except PermissionError:
            fd = _open_in_root(rootfd, path, flags)  # O_NOATIME needs ownership or CAP_FOWNER
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit)
    except (OSError, ValueError, IndexError):
        return None
    finally:
        for opened in (fd, rootfd, dirfd):
            if opened >= 0:
                os.close(opened)


def parse_names(text: bytes | None) -> dict[int, str]:
    """passwd/group lines to id -> name; the first entry for an id wins, as getpwuid does."""
    names: dict[int, str] = {}
    for line in (text or b"").split(b"\n"):
        parts = line.split(b":")
        if len(parts) >= 3 and parts[2].isdigit() and parts[0] and parts[0][:1] not in (b"+", b"-", b"#"):
            names.setdefault(int(parts[2]), parts[0].decode(errors="replace"))
    return names


class IdNames:
    """Per-request cache of (users, groups) by the process whose root they were read from: the
    container's init for its members, the process itself for outsiders."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, int], tuple[dict[int, str], dict[int, str]]] = {}

    def of(self, member: Member, start_ticks: int) -> tuple[dict[int, str], dict[int, str]]:
        key = (member.root_pid, member.root_start) if member.root_pid else (member.pid, start_ticks)
        if key not in self._seen:
            self._seen[key] = (parse_names(read_in_root(*key, "etc/passwd")),
                               parse_names(read_in_root(*key, "etc/group")))
        return self._seen[key]
