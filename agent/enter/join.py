"""The target, held and joined: the process the agent resolved, pinned by pidfd and /proc dir fd and
verified by its start time, and its namespaces chosen and joined as nsenter joins them.

A PID alone can name another process by the time it is used; a pidfd cannot, and the /proc dir fd
opened while the pidfd says the process is alive is that process's, so everything read of the
target (its status, environ, confinement, namespaces) is read through them. Joining is one
setns(pidfd, mask) on Linux >= 5.8; before that, setns on each namespace fd, all opened before the
first join, in nsenter's order and two passes (privileges may come with the user namespace).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.errors import InvalidArgument, PermissionDenied, ProcessGone
from ..core.plan import Plan
from ..linux.syscalls import CLONE, NS_ORDER, setns
from ..procfs.procns import stat_fields
from .failure import INTERNAL, EnterError


@dataclass
class HeldProcess:
    """A process held by pidfd and /proc dir fd, verified to be the one the agent resolved."""

    pid: int
    pidfd: int
    dirfd: int

    @classmethod
    def open(cls, pid: int, start_time: int) -> HeldProcess:
        gone = EnterError(ProcessGone, f"process {pid} of the container exited", gone=True)
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise gone from None
        try:
            dirfd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            os.close(pidfd)
            raise gone from None
        held = cls(pid, pidfd, dirfd)
        try:
            fields = stat_fields(held.read("stat"))
            if fields[0] in (b"Z", b"X") or (start_time and int(fields[19]) != start_time):
                raise EnterError(ProcessGone, f"PID {pid} no longer belongs to the container's process", gone=True)
            signal.pidfd_send_signal(pidfd, 0)  # alive now, so what we opened is that process's
        except (ProcessLookupError, FileNotFoundError):
            held.close()
            raise gone from None
        except BaseException:
            held.close()
            raise
        return held

    def read(self, name: str) -> bytes:
        fd = os.open(name, os.O_RDONLY, dir_fd=self.dirfd)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def same_ns(self, ns: str) -> bool:
        mine, theirs = os.stat(f"/proc/self/ns/{ns}"), os.stat(f"ns/{ns}", dir_fd=self.dirfd)
        return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)

    def has_ns(self, ns: str) -> bool:
        try:
            os.stat(f"ns/{ns}", dir_fd=self.dirfd)
        except FileNotFoundError:
            return False
        return True

    def close(self) -> None:
        for fd in (self.dirfd, self.pidfd):
            with contextlib.suppress(OSError):
                os.close(fd)


def choose_namespaces(plan: Plan, target: HeldProcess) -> list[str]:
    """Requested types (or all the target has), in nsenter's order; user only when it differs."""
    wanted = plan.namespaces or tuple(t for t in NS_ORDER if target.has_ns(t))
    missing = [t for t in wanted if not target.has_ns(t)]
    if missing:
        raise EnterError(InvalidArgument, f"this kernel has no {missing[0]} namespaces")
    chosen = [t for t in NS_ORDER if t in wanted]
    if "user" in chosen and target.same_ns("user"):
        chosen.remove("user")  # setns refuses to re-enter one's own user namespace (nsenter -a skips it)
    if plan.tools and "mnt" in chosen:
        chosen.remove("mnt")
    return chosen


def join(target: HeldProcess, types: Sequence[str], method: str) -> None:
    """Join `types` of the target: one setns(pidfd, mask) (Linux >= 5.8); else nsenter's two passes
    over ns fds that were all opened before the first join."""
    if not types:
        return
    if method in ("auto", "pidfd"):
        mask = 0
        for t in types:
            mask |= CLONE[t]
        try:
            setns(target.pidfd, mask)
            return
        except OSError as err:
            if method == "pidfd" or err.errno != errno.EINVAL:
                raise _setns_error(err, ",".join(types)) from None
    fds = {}
    try:
        for t in types:
            fds[t] = os.open(f"ns/{t}", os.O_RDONLY, dir_fd=target.dirfd)
        signal.pidfd_send_signal(target.pidfd, 0)
        done = set()
        for t in types:  # first pass: everything but user, errors ignored (privileges may come with user)
            if t != "user":
                with contextlib.suppress(OSError):
                    setns(fds[t], CLONE[t])
                    done.add(t)
        for t in types:
            if t not in done:
                try:
                    setns(fds[t], CLONE[t])
                except OSError as err:
                    raise _setns_error(err, t) from None
    except (ProcessLookupError, FileNotFoundError):
        raise EnterError(ProcessGone, f"process {target.pid} of the container exited", gone=True) from None
    finally:
        for fd in fds.values():
            os.close(fd)


def _setns_error(err: OSError, what: str) -> EnterError:
    if err.errno == errno.ESRCH:
        return EnterError(ProcessGone, f"process of the container exited while joining {what}", gone=True)
    if err.errno == errno.EPERM:
        return EnterError(PermissionDenied, f"the kernel refused to join {what}: {err.strerror}")
    return EnterError(INTERNAL, f"cannot join {what}: {err.strerror}")
