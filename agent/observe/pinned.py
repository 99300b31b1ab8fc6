"""A pod member's /proc/PID, pinned: a directory fd bound to that process, and the check that the
process behind it is still the member discovery found.

Reads through a /proc/PID directory fd fail once that process is gone instead of reaching a
successor, and a process that started after discovery began is checked for membership again before
it is attributed (pid_max can be as low as 32768): it may have taken over a PID that was listed.
"""

from __future__ import annotations

import os
import time

from ..core.process import Member
from ..procfs import procns

CLK_TCK = os.sysconf("SC_CLK_TCK")


def now_ticks() -> int:
    """The boot-time clock in the unit of /proc/PID/stat's start time."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * CLK_TCK)


def pid_dir(pid: int) -> int:
    """/proc/PID as an O_PATH fd: only ever a base for openat and readlinkat, so it need not be opened
    for reading. It stays bound to that process all the same."""
    return os.open(str(pid), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=procns.proc_fd())


def read_once(dirfd: int, name: str, size: int, whole: bool = False) -> bytes:
    """One read: procfs hands over a whole stat, status or cmdline (up to `size`) at once. With
    `whole`, a read that filled `size` goes on to the end (a status listing thousands of groups)."""
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        data = os.read(fd, size)
        if whole and len(data) == size:
            chunks = [data]
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


def still_member(dirfd: int, member: Member) -> bool:
    """Whether the process behind `dirfd` is a member in its own right: in the member's container
    cgroup, or (outsiders) in the namespaces it was found in."""
    if not member.outside:
        return member.container_id in procns.read_at(dirfd, "cgroup").decode(errors="replace")
    pid_ns, net_ns = member.pid_ns, member.net_ns
    try:  # the links' text names the namespace on the one nsfs: a readlink costs half a stat
        pid_ok = pid_ns is None or os.readlink("ns/pid", dir_fd=dirfd) == pid_ns.link
        net_ok = net_ns is None or os.readlink("ns/net", dir_fd=dirfd) == net_ns.link
    except OSError:
        return False
    return pid_ok and net_ok and (pid_ns is not None or net_ns is not None)


def current_stat(dirfd: int, member: Member, since_ticks: int) -> bytes | None:
    """The member's /proc/PID/stat, if it is still the member found; None when it is gone or a stranger.

    A process that started after discovery began may have taken over a PID that was listed: it is
    accepted only if it is a member in its own right (same container cgroup, or same namespaces).
    """
    try:
        raw = read_once(dirfd, "stat", 4096)
        start = int(raw[raw.rindex(b")") + 2:].split(b" ", 20)[19])
        return raw if start < since_ticks or still_member(dirfd, member) else None
    except (OSError, ValueError, IndexError):
        return None


def open_member(member: Member, since_ticks: int) -> tuple[int, list[bytes]] | None:
    """A /proc/PID dirfd and [name, *stat fields from "state" on], if the process is still the member
    found (see current_stat); None otherwise. The caller closes the dirfd."""
    try:
        dirfd = pid_dir(member.pid)
    except OSError:
        return None
    raw = current_stat(dirfd, member, since_ticks)
    if raw is None:
        os.close(dirfd)
        return None
    return dirfd, [raw[raw.index(b"(") + 1:raw.rindex(b")")], *procns.stat_fields(raw)]
