"""Read a process's namespaces from /proc without ever attributing them to the wrong process.

A /proc/PID directory fd stays bound to the process it was opened for: once that process is
gone, reads through it fail instead of reaching a newer process that reused the PID. We also
hold a pidfd and check afterwards that the process is still alive, and compare start times with
what the caller expects, so a PID recycled between resolution and reading is refused too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from ..core.model import FOR_CHILDREN, NS_TYPES, HostInfo, ProcessNamespaces
from ..core.nsid import NamespaceId

# Errors that mean "that process is gone" when reading through its /proc directory fd.
GONE_ERRNOS = (errno.ESRCH, errno.ENOENT)


@cache
def proc_fd() -> int:
    """/proc, opened once: a base for openat and readlinkat of /proc/PID/... ."""
    return os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def read_at(dirfd: int, name: str, limit: int = 65536) -> bytes:
    """Up to `limit` bytes of a file under an open /proc/PID directory."""
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        chunks, size = [], 0
        while size < limit and (chunk := os.read(fd, min(65536, limit - size))):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def stat_fields(raw: bytes) -> list[bytes]:
    """Fields of /proc/PID/stat after the command name (which may hold spaces and parentheses):
    [0] is the state, [1] the PPID, [19] the start time."""
    return raw[raw.rindex(b")") + 2:].split()


def _stat_fields(dirfd: int) -> list[str]:
    return [f.decode() for f in stat_fields(read_at(dirfd, "stat", 4096))]


def start_time(pid: int) -> int:
    """Start time in clock ticks after boot; raises ProcessLookupError when there is no such process."""
    try:
        dirfd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    try:
        return int(_stat_fields(dirfd)[19])
    except OSError as err:
        if err.errno in GONE_ERRNOS:
            raise ProcessLookupError(pid) from None
        raise
    finally:
        os.close(dirfd)


def read_namespaces(pid: int, expect_start: int = 0, types: Iterable[str] = NS_TYPES) -> ProcessNamespaces:
    """The namespaces of `pid`; with `expect_start`, only if it is still that very process."""
    gone = ProcessNamespaces(pid=pid, start_time=expect_start, gone=True, error="process exited")
    with contextlib.ExitStack() as fds:
        try:
            pidfd = os.pidfd_open(pid)
            fds.callback(os.close, pidfd)
            dirfd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
            fds.callback(os.close, dirfd)
        except (ProcessLookupError, FileNotFoundError):
            return gone
        except OSError as err:
            return ProcessNamespaces(pid=pid, start_time=expect_start, error=f"cannot open /proc/{pid}: {err.strerror}")
        try:
            return _read_open(pid, pidfd, dirfd, expect_start, tuple(types)) or gone
        except ProcessLookupError:
            return gone
        except PermissionError as err:
            return ProcessNamespaces(pid=pid, start_time=expect_start, error=f"access denied: {err.strerror}")
        except OSError as err:
            if err.errno in GONE_ERRNOS:
                return gone
            raise


def _read_open(pid: int, pidfd: int, dirfd: int, expect_start: int,
               types: tuple[str, ...]) -> ProcessNamespaces | None:
    """The read itself, through fds already bound to the process; None when it turns out gone."""
    fields = _stat_fields(dirfd)
    started = int(fields[19])
    if fields[0] in ("Z", "X"):
        return None
    if expect_start and started != expect_start:
        return ProcessNamespaces(pid=pid, start_time=expect_start, gone=True,
                                 error=f"PID {pid} now belongs to another process")
    ids: dict[str, NamespaceId] = {}
    children: dict[str, NamespaceId] = {}
    for ns in types:
        if ns not in kernel_types():
            continue
        try:
            st = os.stat(f"ns/{ns}", dir_fd=dirfd)
        except FileNotFoundError:
            # An exiting process drops its namespaces (all but pid and user) before it becomes
            # a zombie, while it can still be signalled: report it gone, not partial.
            return None
        ids[ns] = NamespaceId(ns, st.st_dev, st.st_ino)
        if ns in FOR_CHILDREN:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(f"ns/{FOR_CHILDREN[ns]}", dir_fd=dirfd)
                if (st.st_dev, st.st_ino) != (ids[ns].dev, ids[ns].ino):
                    children[ns] = NamespaceId(ns, st.st_dev, st.st_ino)
    signal.pidfd_send_signal(pidfd, 0)  # still alive, so nothing above came from a successor
    if not ids:
        return None
    return ProcessNamespaces(pid=pid, start_time=started, ids=ids, for_children=children)


@cache
def nsfs_dev() -> int:
    """The st_dev of nsfs, the kernel's filesystem of namespaces, stat'ed once: with a link's text it
    makes a NamespaceId without a stat of its own (`NamespaceId.from_link(text, nsfs_dev())`)."""
    return os.stat("/proc/self/ns/net").st_dev


@cache
def kernel_types() -> frozenset[str]:
    """The namespace types this kernel has (time arrived in 5.6, cgroup in 4.6)."""
    return frozenset(name for name in os.listdir("/proc/self/ns") if name in NS_TYPES)


def host_reference_pid() -> int:
    """PID 1, or kthreadd (PID 2) where PID 1 refuses to be read (some sandboxes); both hold
    the initial namespaces on an ordinary node."""
    try:
        os.stat("/proc/1/ns/mnt")
    except PermissionError:
        return 2
    return 1


def in_host_pid_namespace() -> bool:
    """True when this process sees the node's PIDs (hostPID); otherwise "host" would mean our own pod."""
    with open("/proc/self/status") as f:
        nspid = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
    return len(nspid) == 1


@cache
def cgroup_mode() -> str:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return "v2"
    if (root / "unified" / "cgroup.controllers").exists():
        return "hybrid"
    return "v1"


def read_host() -> HostInfo:
    return HostInfo(read_namespaces(host_reference_pid()), cgroup_mode())
