"""The node-wide namespace map: every namespace any process holds, like `lsns`, plus who owns it.

This is the one place that walks all of /proc (design.md): one pass over the process entries
(threads are not listed there, and lsns counts processes too), grouping by the text of each
/proc/PID/ns/<type> link. The kernel prints that link from the namespace's inode number, and
every namespace lives on the one nsfs, so the text identifies the namespace as well as a stat
would, at half the cost. Only the lowest PID of each namespace is then stat'ed for the
NamespaceId (st_dev, st_ino) and read for its command, through one directory fd, so the row's
identity, PID and command all come from one process that is verified to still be a member.

Owners come from the caller's HostInfo and PodInfo values; a pod's init processes are read with
`procns.read_namespaces(pid, expect_start=...)`, so a reused PID is never taken for a container.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from ..core import validate
from ..core.model import NS_TYPES, HostInfo, NodeNamespace, Owner, PodInfo
from ..core.nsid import NamespaceId
from ..procfs import procns

HOST = Owner(kind="host")
UNKNOWN = Owner(kind="unknown")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_CMDLINE_MAX = 8192  # what lsns reads (BUFSIZ); longer command lines are cut, as there


def build_node_map(pods: Iterable[PodInfo], host: HostInfo, types: Collection[str] = NS_TYPES,
                   proc: Path = Path("/proc")) -> list[NodeNamespace]:
    """Every namespace of `types` held by a process on this node, in NS_TYPES order then by inode.

    `proc` is the procfs to walk; owners are read through procns, which always uses /proc, so a
    different `proc` must show the same processes (the host's procfs mounted elsewhere does).
    """
    wanted = [t for t in NS_TYPES if t in validate.ns_types(types)]
    proc_fd = os.open(proc, _DIR_FLAGS)
    try:
        present = set(os.listdir(os.path.join(proc, "self", "ns")))
        wanted = [t for t in wanted if t in present]  # a kernel without time namespaces, say
        groups = _walk(proc_fd, wanted)
        rows = _resolve(proc_fd, groups)
    finally:
        os.close(proc_fd)
    owners = _owners(pods, host, wanted)
    order = {t: i for i, t in enumerate(NS_TYPES)}
    rows.sort(key=lambda r: (order[r.id.type], r.id.ino))
    return [replace(r, owners=tuple(owners.get(r.id, ())) or (UNKNOWN,)) for r in rows]


def _walk(proc_fd: int, types: list[str]) -> dict[str, dict[str, list[int]]]:
    """type -> link text ("net:[4026531840]") -> PIDs, in one pass over the process entries.

    A link that cannot be read is skipped alone, as lsns does: refused (PID 1 here), gone with
    the process, or gone with its nsproxy while the process is a zombie, which still counts in
    its pid and user namespaces (they hang off its pid and credentials, not the nsproxy).
    """
    groups: dict[str, dict[str, list[int]]] = {t: {} for t in types}
    targets = [(f"ns/{t}", groups[t]) for t in types]
    readlink, open_, close = os.readlink, os.open, os.close
    skip = (FileNotFoundError, ProcessLookupError, PermissionError)
    for name in os.listdir(proc_fd):
        if not name.isdigit():
            continue
        try:
            dirfd = open_(name, _DIR_FLAGS, dir_fd=proc_fd)
        except skip:
            continue
        pid = int(name)
        try:
            for path, group in targets:
                try:
                    link = readlink(path, dir_fd=dirfd)
                except skip:
                    continue
                pids = group.get(link)
                if pids is None:
                    group[link] = [pid]
                else:
                    pids.append(pid)
        finally:
            close(dirfd)
    return groups


@dataclass(slots=True)
class _Row:
    """A namespace while its lowest living member is being looked for."""

    type: str
    ino: int
    pids: list[int]  # ascending
    next: int = 0  # index of the candidate being tried
    id: NamespaceId | None = None
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


def _resolve(proc_fd: int, groups: dict[str, dict[str, list[int]]]) -> list[NodeNamespace]:
    """Rows with NamespaceId and command from their lowest PID, falling back to the next lowest
    when that process exited or left the namespace since the walk; rows with no member left are dropped."""
    rows: list[_Row] = []
    pending: dict[int, list[_Row]] = {}
    for type_, links in groups.items():
        for link, pids in links.items():
            pids.sort()
            row = _Row(type_, int(link[len(type_) + 2:-1]), pids)
            rows.append(row)
            pending.setdefault(pids[0], []).append(row)
    while pending:
        retry: dict[int, list[_Row]] = {}
        for pid, waiting in pending.items():
            probe = _probe(proc_fd, pid, {r.type for r in waiting})
            for row in waiting:
                nid = probe.ids.get(row.type) if probe is not None else None
                if probe is not None and nid is not None and nid.ino == row.ino:
                    row.id, row.command = nid, probe.command
                    continue
                row.next += 1
                if row.next < len(row.pids):
                    retry.setdefault(row.lowest_pid, []).append(row)
        pending = retry
    return [NodeNamespace(r.id, r.processes, r.lowest_pid, r.command) for r in rows if r.id is not None]


def _probe(proc_fd: int, pid: int, types: Collection[str]) -> _Probe | None:
    """The namespaces, then the command, of `pid`, all through one fd of /proc/PID; None when it is gone.

    Once the process is gone every read through the fd fails, so a command read after the
    namespaces belongs to the process that was just seen in them (or to its zombie: lsns agrees).
    """
    try:
        dirfd = os.open(str(pid), _DIR_FLAGS, dir_fd=proc_fd)
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



def _owners(pods: Iterable[PodInfo], host: HostInfo, types: list[str]) -> dict[NamespaceId, list[Owner]]:
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
