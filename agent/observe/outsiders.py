"""Processes outside a pod's cgroups that joined its pid or network namespace (nsenter, an exec
helper, a runtime hook): the one part of listing a pod that must look at every process of the node.

One pass over /proc answers every request waiting for it. A request joins the next pass that has
not started yet, never one under way, so its answer is as fresh as a pass of its own would be;
under load the node is walked once per round instead of once per request (ps of 15 pods at once on
a 3,000-process node: one walk, not fifteen).

The agent makes the pass in a helper process of its own (WalkHelper): it is a Python loop over
every process of the node, tens of milliseconds on a busy node, and in the agent's interpreter it
would hold the lock every request thread needs (an Inspect would wait behind it). The helper is
single-threaded, started once, and ends when the agent's end of its pipe closes.

Per process the pass costs a readlink of ns/net (half a stat, which follows the link into nsfs),
and one NS_GET_PID_IN_PIDNS ioctl per pod pid namespace (no path walk: a fifth of a readlink); only
the few it names get a readlink of ns/pid. With more pid namespaces than that pays for, or kernels
without the ioctl, every process gets the readlink. The node's own namespaces are never asked for.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache

from ..procfs.procns import proc_fd

log = logging.getLogger(__name__)

_NS_GET_PID_IN_PIDNS = (2 << 30) | (4 << 16) | (0xB7 << 8) | 0x8  # _IOR(NSIO, 0x8, int): a PID of ours -> in ns
_IOCTL_WORTH = 4  # with more pid namespaces to ask about than this, one readlink of ns/pid is cheaper
# Called with plain ints (no argtypes: a third cheaper per call, and the pass makes thousands).
_ioctl = ctypes.CDLL(None, use_errno=True).ioctl


@dataclass(frozen=True)
class Query:
    """One pod's question: who else is in these namespaces?"""

    pid_targets: Mapping[str, str]  # "pid:[INODE]" -> the name of who holds it in the pod
    net_target: str  # "net:[INODE]", or "" when the pod's network is not asked about
    holders: Mapping[int, int]  # pid namespace inode -> a process in it, to open the namespace by
    known: frozenset[int]  # the pod's members already (its cgroups): not outsiders


@dataclass(frozen=True)
class Joined:
    pid: int
    pid_link: str  # "" when not read
    net_link: str


@dataclass
class _Pass:
    queries: list[Query] = field(default_factory=list)
    go: threading.Event = field(default_factory=threading.Event)  # it may start: the one before it ended
    done: threading.Event = field(default_factory=threading.Event)
    hits: list[Joined] = field(default_factory=list)
    error: BaseException | None = None


Walk = Callable[[list[Query]], list[Joined]]


class OutsiderScan:
    """Shared by the agent's threads; `find` blocks until a pass that started after the call ends.
    `walk` makes the pass (default: in this process; the agent gives a WalkHelper)."""

    def __init__(self, walk: Walk | None = None) -> None:
        self.walk = walk
        self._lock = threading.Lock()
        self._running: _Pass | None = None
        self._next: _Pass | None = None
        self.passes = 0  # how many walks were made (for tests and benchmarks)

    def find(self, query: Query) -> list[Joined]:
        """Processes not in `query.known` that are in one of its pid namespaces or its network namespace."""
        if not query.pid_targets and not query.net_target:
            return []
        with self._lock:
            if self._running is None:
                mine = self._running = _Pass([query])
                mine.go.set()
            else:
                if self._next is None:
                    self._next = _Pass()
                mine = self._next
                mine.queries.append(query)
            leads = mine.queries[0] is query
        if leads:
            mine.go.wait()
            try:
                mine.hits = (self.walk or _walk)(mine.queries)
            except BaseException as err:
                mine.error = err
            finally:
                self._finish(mine)
        mine.done.wait()
        if mine.error is not None:
            raise mine.error
        return [j for j in mine.hits if j.pid not in query.known
                and (j.pid_link in query.pid_targets or (query.net_target and j.net_link == query.net_target))]

    def _finish(self, ended: _Pass) -> None:
        with self._lock:
            self.passes += 1
            self._running, self._next = self._next, None  # the waiting pass, closed to newcomers, starts
            following = self._running
        ended.done.set()
        if following is not None:
            following.go.set()


def _walk(queries: list[Query]) -> list[Joined]:
    """One /proc pass for all of `queries`."""
    pid_links = {link for q in queries for link in q.pid_targets}
    net_links = {q.net_target for q in queries if q.net_target}
    holders = {ino: pid for q in queries for ino, pid in q.holders.items()}
    skip = {str(p) for p in frozenset.intersection(*(q.known for q in queries))}
    ns_fds = None
    if pid_links and len(holders) == len(pid_links) and len(holders) <= _IOCTL_WORTH:
        ns_fds = _pid_ns_fds(holders)
    proc, readlink, found = proc_fd(), os.readlink, []
    try:
        for name in os.listdir(proc):
            if name in skip or not name.isdigit():
                continue
            try:
                net_link = readlink(name + "/ns/net", dir_fd=proc) if net_links else ""
                if ns_fds is not None and net_link not in net_links:
                    pid = int(name)
                    for fd in ns_fds:
                        if _ioctl(fd, _NS_GET_PID_IN_PIDNS, pid) > 0:
                            break
                    else:
                        continue  # in none of the pods' pid namespaces, nor in their network namespaces
                pid_link = readlink(name + "/ns/pid", dir_fd=proc) if pid_links else ""
            except OSError:
                continue  # gone, or a kernel that refuses (exiting processes lose their ns links)
            if pid_link in pid_links or net_link in net_links:
                found.append(Joined(int(name), pid_link, net_link))
    finally:
        for fd in ns_fds or ():
            os.close(fd)
    return found


def _pid_ns_fds(holders: Mapping[int, int]) -> list[int] | None:
    """The pods' pid namespaces (inode -> a process in it) opened for NS_GET_PID_IN_PIDNS; None when
    one cannot be opened as the namespace named (its process is gone), the kernel lacks the ioctl, or
    /proc is not of our own pid namespace (the ioctl reads PIDs in ours): the pass then readlinks."""
    if not holders or not _proc_is_ours():
        return None
    fds: list[int] = []
    try:
        for ino, pid in holders.items():
            fds.append(os.open(f"{pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_fd()))
            if os.fstat(fds[-1]).st_ino != ino:
                raise ProcessLookupError(pid)  # the PID changed hands since it was read
        if fds and _ioctl(fds[0], _NS_GET_PID_IN_PIDNS, os.getpid()) < 0 and ctypes.get_errno() != errno.ESRCH:
            raise OSError(ctypes.get_errno(), "NS_GET_PID_IN_PIDNS")  # ENOTTY before the kernel had it
        return fds
    except OSError:
        for fd in fds:
            os.close(fd)
        return None


@cache
def _proc_is_ours() -> bool:
    try:
        return os.readlink("self", dir_fd=proc_fd()) == str(os.getpid())
    except OSError:
        return False


# -- the pass in a process of its own -------------------------------------------------------------------
class WalkHelper:
    """`_walk` in a helper process (`python -m nsinspect.agent.observe.outsiders`), one JSON line each way.
    A helper that fails is replaced on the next pass; that pass is made here meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None

    def __call__(self, queries: list[Query]) -> list[Joined]:
        request = json.dumps([{"pid_targets": dict(q.pid_targets), "net_target": q.net_target,
                               "holders": {str(k): v for k, v in q.holders.items()}, "known": sorted(q.known)}
                              for q in queries])
        with self._lock:
            try:
                proc = self._proc = self._proc or _start_helper()
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(request + "\n")
                proc.stdin.flush()
                answer = proc.stdout.readline()
                return [Joined(*hit) for hit in json.loads(answer)]
            except (OSError, ValueError, TypeError) as err:
                log.warning("the outsider pass helper failed: walking here", extra={"error": str(err)})
                self._stop()
        return _walk(queries)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):  # a write still buffered for a helper that died
                        pipe.close()
            self._proc = None


def _start_helper() -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, bufsize=1, close_fds=True)


def _serve() -> None:
    """The helper's loop: a list of queries in, the pass's hits out; until its stdin closes."""
    for line in sys.stdin:
        queries = [Query(q["pid_targets"], q["net_target"], {int(k): v for k, v in q["holders"].items()},
                         frozenset(q["known"])) for q in json.loads(line)]
        hits = _walk(queries)
        sys.stdout.write(json.dumps([[j.pid, j.pid_link, j.net_link] for j in hits]) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
