"""The node-wide namespace map: every namespace any process holds, like `lsns`, plus who owns it.

This is the one place that walks all of /proc (design.md): one pass over the process entries
(procfs.walk; threads are not listed there, and lsns counts processes too), grouping by the text
of each /proc/PID/ns/<type> link. The kernel prints that link from the namespace's inode number,
and every namespace lives on the one nsfs, so the text identifies the namespace as well as a stat
would, at half the cost: at the end of the pass it becomes the NamespaceId with nsfs's device.
Only the lowest PID of each namespace is then stat'ed, to check it still holds that NamespaceId,
and read for its command, through one directory fd, so the row's identity, PID and command all
come from one process that is verified to still be a member.

Owners come from the caller's HostInfo and PodInfo values; a pod's init processes are read with
`procns.read_namespaces(pid, expect_start=...)`, so a reused PID is never taken for a container.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..core import validate
from ..core.model import NS_TYPES, HostInfo, NodeNamespace, Owner, PodInfo
from ..core.nsid import NamespaceId
from ..procfs import procns
from ..procfs.walk import DIR_FLAGS, each_process

HOST = Owner(kind="host")
UNKNOWN = Owner(kind="unknown")

_CMDLINE_MAX = 8192  # what lsns reads (BUFSIZ); longer command lines are cut, as there


def build_node_map(pods: Iterable[PodInfo], host: HostInfo, types: Collection[str] = NS_TYPES,
                   proc: Path = Path("/proc")) -> list[NodeNamespace]:
    """Every namespace of `types` held by a process on this node, in NS_TYPES order then by inode.

    `proc` is the procfs to walk; owners are read through procns, which always uses /proc, so a
    different `proc` must show the same processes (the host's procfs mounted elsewhere does).
    """
    wanted = [t for t in NS_TYPES if t in validate.ns_types(types)]
    proc_fd = os.open(proc, DIR_FLAGS)
    try:
        present = set(os.listdir(os.path.join(proc, "self", "ns")))
        wanted = [t for t in wanted if t in present]  # a kernel without time namespaces, say
        rows = namespace_rows(proc_fd, _members(proc_fd, wanted))
    finally:
        os.close(proc_fd)
    owners = _owners_by_namespace(pods, host, wanted)
    order = {t: i for i, t in enumerate(NS_TYPES)}
    rows.sort(key=lambda r: (order[r.id.type], r.id.ino))
    return [replace(r, owners=tuple(owners.get(r.id, ())) or (UNKNOWN,)) for r in rows]


def _members(proc_fd: int, types: list[str]) -> dict[NamespaceId, list[int]]:
    """Every namespace of `types` and the PIDs in it, in one pass over the process entries.

    Grouped by link text ("net:[4026531840]", which names its type too) inside the loop, made
    NamespaceIds once at its end. A link that cannot be read is skipped alone, as lsns does:
    refused (PID 1 here), gone with the process, or gone with its nsproxy while the process is a
    zombie, which still counts in its pid and user namespaces (they hang off its pid and
    credentials, not the nsproxy).
    """
    by_link: dict[str, list[int]] = {}
    paths = [f"ns/{t}" for t in types]
    readlink, skip = os.readlink, (FileNotFoundError, ProcessLookupError, PermissionError)

    def group_links(pid: int, dirfd: int) -> None:
        for path in paths:
            try:
                link = readlink(path, dir_fd=dirfd)
            except skip:
                continue
            pids = by_link.get(link)
            if pids is None:
                by_link[link] = [pid]
            else:
                pids.append(pid)

    each_process(group_links, proc_fd)
    dev = procns.nsfs_dev()
    return {NamespaceId.from_link(link, dev): pids for link, pids in by_link.items()}


@dataclass(slots=True)
class _Row:
    """A namespace while its lowest living member is being looked for."""

    id: NamespaceId
    pids: list[int]  # ascending
    next: int = 0  # index of the candidate being tried
    found: bool = False  # a member was seen in it through its own fd
    command: str = ""

    @property
    def processes(self) -> int:
        return len(self.pids) - self.next  # members found gone are no longer counted

    @property
    def lowest_pid(self) -> int:
        return self.pids[self.next]


@dataclass(frozen=True)
class _Probe:
    """One process read through one directory fd: its command and the namespaces asked about."""

    command: str
    ids: dict[str, NamespaceId]


def namespace_rows(proc_fd: int, members: Mapping[NamespaceId, list[int]]) -> list[NodeNamespace]:
    """The rows of namespaces and the PIDs seen in them, with command from their lowest PID once a
    stat through that process's own fd finds it still in the namespace, falling back to the next
    lowest when it exited or left since the walk; rows with no member left are dropped."""
    rows: list[_Row] = []
    pending: dict[int, list[_Row]] = {}
    for nid, pids in members.items():
        pids.sort()
        row = _Row(nid, pids)
        rows.append(row)
        pending.setdefault(pids[0], []).append(row)
    while pending:
        retry: dict[int, list[_Row]] = {}
        for pid, waiting in pending.items():
            probe = _probe(proc_fd, pid, {r.id.type for r in waiting})
            for row in waiting:
                if probe is not None and probe.ids.get(row.id.type) == row.id:
                    row.found, row.command = True, probe.command
                    continue
                row.next += 1
                if row.next < len(row.pids):
                    retry.setdefault(row.lowest_pid, []).append(row)
        pending = retry
    return [NodeNamespace(r.id, r.processes, r.lowest_pid, r.command) for r in rows if r.found]


def _probe(proc_fd: int, pid: int, types: Collection[str]) -> _Probe | None:
    """The namespaces, then the command, of `pid`, all through one fd of /proc/PID; None when it is gone.

    Once the process is gone every read through the fd fails, so a command read after the
    namespaces belongs to the process that was just seen in them (or to its zombie: lsns agrees).
    """
    try:
        dirfd = os.open(str(pid), DIR_FLAGS, dir_fd=proc_fd)
    except (FileNotFoundError, PermissionError):
        return None
    try:
        ids: dict[str, NamespaceId] = {}
        for t in types:
            try:
                st = os.stat(f"ns/{t}", dir_fd=dirfd)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue  # that row moves on to its next lowest PID
            ids[t] = NamespaceId(t, st.st_dev, st.st_ino)
        return _Probe(_command(dirfd), ids)
    except OSError as err:
        if err.errno in procns.GONE_ERRNOS:
            return None
        raise
    finally:
        os.close(dirfd)


def _command(dirfd: int) -> str:
    """lsns's COMMAND: the command line with NULs as spaces, else the comm (kernel threads, zombies),
    else nothing (either refused)."""
    for name, size in (("cmdline", _CMDLINE_MAX), ("comm", 64)):
        try:
            raw = procns.read_at(dirfd, name, size)
        except PermissionError:
            continue
        raw = raw.removesuffix(b"\0" if name == "cmdline" else b"\n")
        if raw:
            return raw.replace(b"\0", b" ").decode(errors="replace")
    return ""



def _owners_by_namespace(pods: Iterable[PodInfo], host: HostInfo, types: list[str]) -> dict[NamespaceId, list[Owner]]:
    """Who holds each namespace: the host reference process and each pod's verified init processes."""
    owners: dict[NamespaceId, list[Owner]] = {}

    def add(nid: NamespaceId, owner: Owner) -> None:
        held = owners.setdefault(nid, [])
        if owner not in held:
            held.append(owner)

    if not host.namespaces.gone:
        for t in types:
            if t in host.namespaces.ids:
                add(host.namespaces.ids[t], HOST)
    for pid, start, owner in _init_processes(pods):
        if not pid or not start:
            continue  # without a start time a recycled PID could not be told apart
        read = procns.read_namespaces(pid, expect_start=start, types=types)
        if read.gone or read.error:
            continue
        for nid in read.ids.values():
            add(nid, owner)
    return owners


def _init_processes(pods: Iterable[PodInfo]) -> Iterator[tuple[int, int, Owner]]:
    """(pid, start time, owner) for each sandbox and container init process, sandbox first."""
    for pod in pods:
        if pod.sandbox is not None:
            yield pod.sandbox.pid, pod.sandbox.start_time, _pod_owner(pod, "", sandbox=True)
        for c in pod.containers:
            yield c.pid, c.start_time, _pod_owner(pod, c.name, sandbox=False)


def _pod_owner(pod: PodInfo, container: str, sandbox: bool) -> Owner:
    return Owner(kind="pod", pod_namespace=pod.namespace, pod_name=pod.name, pod_uid=pod.uid,
                 container=container, sandbox=sandbox)
