"""The one pass over every process of the node that finds a pod's outsiders: who else is in these
pid or network namespaces? Made for many pods' questions at once (outsiders.py shares it).

Per process the pass costs a readlink of ns/net (half a stat, which follows the link into nsfs),
and one NS_GET_PID_IN_PIDNS ioctl per pod pid namespace (no path walk: a fifth of a readlink); only
the few it names get a readlink of ns/pid. With more pid namespaces than that pays for, or kernels
without the ioctl, every process gets the readlink. The node's own namespaces are never asked for.

So the loop compares the links' raw text (`PassPlan`, `RawHit`); namespaces are NamespaceIds on
both sides of it (`Query`, `Joined`), made from that text at its edge with nsfs's device.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from ..core.nsid import NamespaceId
from ..linux.syscalls import libc
from ..procfs.procns import nsfs_dev, proc_fd
from ..procfs.walk import process_names

_NS_GET_PID_IN_PIDNS = (2 << 30) | (4 << 16) | (0xB7 << 8) | 0x8  # _IOR(NSIO, 0x8, int): a PID of ours -> in ns
_IOCTL_WORTH = 4  # with more pid namespaces to ask about than this, one readlink of ns/pid is cheaper
# Called with plain ints (no argtypes: a third cheaper per call, and the pass makes thousands).
_ioctl = libc.ioctl


@dataclass(frozen=True)
class Query:
    """One pod's question: who else is in these namespaces?"""

    pid_targets: Mapping[NamespaceId, str]  # a pid namespace of the pod -> the name of who holds it in the pod
    net_target: NamespaceId | None  # None when the pod's network is not asked about
    holders: Mapping[NamespaceId, int]  # pid namespace -> a process in it, to open the namespace by
    known: frozenset[int]  # the pod's members already (its cgroups): not outsiders


@dataclass(frozen=True)
class Joined:
    """A process in one of the namespaces asked about, and the namespaces the pass read of it."""

    pid: int
    pid_ns: NamespaceId | None  # None when not read
    net_ns: NamespaceId | None


@dataclass(frozen=True)
class PassPlan:
    """What one pass looks for, in the shapes its loop compares: link texts ("pid:[4026531836]"),
    the pid namespaces to ask the ioctl about, and the processes every question already knows."""

    pid_links: frozenset[str]
    net_links: frozenset[str]
    holders: Mapping[NamespaceId, int]
    skip: frozenset[int]


RawHit = tuple[int, str, str]  # pid, ns/pid link text ("" when not read), ns/net link text


def plan_for(queries: Iterable[Query]) -> PassPlan:
    """One pass for all of `queries`: the union of their targets, skipping what all of them know."""
    queries = list(queries)
    return PassPlan(pid_links=frozenset(ns.link for q in queries for ns in q.pid_targets),
                    net_links=frozenset(q.net_target.link for q in queries if q.net_target is not None),
                    holders={ns: pid for q in queries for ns, pid in q.holders.items()},
                    skip=frozenset.intersection(*(q.known for q in queries)) if queries else frozenset())


def raw_pass(plan: PassPlan) -> list[RawHit]:
    """The loop over /proc (procfs.walk's names, read through its dir fd), in link texts."""
    pid_links, net_links = plan.pid_links, plan.net_links
    ns_fds = None
    if pid_links and len(plan.holders) == len(pid_links) and len(plan.holders) <= _IOCTL_WORTH:
        ns_fds = _pid_ns_fds(plan.holders)
    proc, readlink, found = proc_fd(), os.readlink, []
    try:
        for name in process_names(proc, {str(p) for p in plan.skip}):
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
                found.append((int(name), pid_link, net_link))
    finally:
        for fd in ns_fds or ():
            os.close(fd)
    return found


def hits_as_joined(hits: Iterable[RawHit]) -> list[Joined]:
    """The loop's hits as NamespaceIds (the links' text on nsfs's device), each text parsed once."""
    dev = nsfs_dev()
    seen: dict[str, NamespaceId | None] = {"": None}

    def ns(text: str) -> NamespaceId | None:
        if text not in seen:
            seen[text] = NamespaceId.from_link(text, dev)
        return seen[text]

    return [Joined(pid, ns(pid_link), ns(net_link)) for pid, pid_link, net_link in hits]


def node_pass(queries: list[Query]) -> list[Joined]:
    """One /proc pass for all of `queries`, in this process."""
    return hits_as_joined(raw_pass(plan_for(queries)))


def _pid_ns_fds(holders: Mapping[NamespaceId, int]) -> list[int] | None:
    """The pods' pid namespaces (-> a process in it) opened for NS_GET_PID_IN_PIDNS; None when one
    cannot be opened as the namespace named (its process is gone), the kernel lacks the ioctl, or
    /proc is not of our own pid namespace (the ioctl reads PIDs in ours): the pass then readlinks."""
    if not holders or not _proc_is_ours():
        return None
    fds: list[int] = []
    try:
        for ns, pid in holders.items():
            fds.append(os.open(f"{pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_fd()))
            st = os.fstat(fds[-1])
            if (st.st_dev, st.st_ino) != (ns.dev, ns.ino):
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
