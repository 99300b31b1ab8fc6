"""A pod's processes as the node sees them, for distroless pods too, without touching the pod:
who belongs to it (discovery), then each one's facts (facts.py) and CPU % (cpu.py).

Members come from the cgroup.procs of the sandbox's and containers' cgroups: O(processes of the
pod). Processes that joined the pod's pid or network namespace from elsewhere (nsenter, an exec
helper) live in other cgroups, so one pass over /proc checks every other process (agent/observe/outsiders.py,
shared by concurrent requests). The node's own namespaces never count, so hostPID/hostNetwork pods
do not list the node. A member is read through its own /proc/PID fd and checked again if it started
after discovery began (pinned.py); user and group names come from its container's own files
(rootfiles.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from ..core.model import PodInfo, PodRef, Source
from ..core.nsid import NamespaceId
from ..core.process import Discovery, Member, ProcessList
from ..procfs import procns
from ..resolve.cgroups import CgroupTree, container_dirs, parse_cgroup_file, read_procs
from ..resolve.fallback import Resolver
from .cpu import Sample, first_sample
from .facts import read_facts
from .outsider_pass import Joined, Query
from .outsiders import OutsiderScan
from .pinned import now_ticks
from .rootfiles import IdNames


# -- discovery ------------------------------------------------------------------------------------
def _settled(found: Member, pod_uid: str, containers: Mapping[str, tuple[str, str, int, int]]) -> Member:
    """A process found in the pod's namespaces that is in one of its container cgroups after all (it
    was forked after the cgroups were read, or its container was not asked for) is that container's."""
    try:
        match = parse_cgroup_file(Path(f"/proc/{found.pid}/cgroup").read_text())
    except OSError:
        return found
    if match is None or match.pod_uid != pod_uid or match.container_id not in containers:
        return found
    name, _, pid, start = containers[match.container_id]
    sandbox = name == "sandbox"
    return Member(found.pid, "" if sandbox else name, match.container_id, sandbox=sandbox, root_pid=pid,
                  root_start=start)


def _outsider(j: Joined, pid_targets: Mapping[NamespaceId, str], net_target: NamespaceId | None) -> Member:
    holder = pid_targets.get(j.pid_ns) if j.pid_ns is not None else None
    joined: tuple[str, ...] = (f"pid:{holder}",) if holder is not None else ()
    joined += ("net",) if net_target is not None and j.net_ns == net_target else ()
    return Member(j.pid, outside=True, joined=joined, pid_ns=j.pid_ns, net_ns=j.net_ns)


class ProcessLister:
    """Resolves a pod, finds its processes and reads them; safe to share between threads."""

    def __init__(self, resolver: Resolver, cgroups: CgroupTree | None = None,
                 outsiders: OutsiderScan | None = None) -> None:
        self.resolver = resolver
        self.cgroups = cgroups or CgroupTree()
        self.outsiders = outsiders or OutsiderScan()

    def discover(self, ref: PodRef, container: str = "") -> Discovery:
        pod = self.resolver.running(ref, container)
        found = self.discover_pod(pod, container)
        if found is None:  # a cached container process is gone: ask the runtime afresh, once
            pod = self.resolver.running(ref, container, fresh=True)
            found = self.discover_pod(pod, container, settle=True)
        assert found is not None
        return found

    def discover_pod(self, pod: PodInfo, container: str = "", settle: bool = False) -> Discovery | None:
        """The pod's members now; None when a process the runtime named is gone (unless `settle`)."""
        since = now_ticks()
        refs = [("sandbox", "" if pod.sandbox is None else pod.sandbox.id, pod.sandbox.pid if pod.sandbox else 0,
                 pod.sandbox.start_time if pod.sandbox else 0)]
        refs += [(c.name, c.id, c.pid, c.start_time) for c in pod.containers if c.state == "running" and c.pid]
        host = procns.read_namespaces(procns.host_reference_pid(), types=("pid", "net"))
        holders: dict[NamespaceId, list[str]] = {}  # pid namespace -> who holds it, sandbox first
        holder_pids: dict[NamespaceId, int] = {}  # pid namespace -> a process in it, to open it by
        net_ns: NamespaceId | None = None
        for name, _, pid, start in refs:
            if not pid:
                continue
            read = procns.read_namespaces(pid, start, types=("pid", "net"))
            if read.gone and not settle:
                return None
            if read.gone or "pid" not in read.ids:
                continue
            if not container or name in (container, "sandbox"):
                holders.setdefault(read.ids["pid"], []).append(name)
                holder_pids.setdefault(read.ids["pid"], pid)
            net_ns = net_ns or read.ids["net"]
        warnings = []
        host_pid, host_net = (host.ids["pid"], host.ids["net"]) if not host.gone else (None, None)
        if host_pid in holders:
            warnings.append("the pod shares the node's pid namespace (hostPID): only its containers' cgroups "
                            "are listed, not every process of the node")
        own = {c for c, *_ in refs}
        wanted = {container} if container else own
        pid_targets = {ns: names[0] for ns, names in holders.items()
                       if ns != host_pid and (not container or container in names)}
        net_target = net_ns if net_ns is not None and net_ns != host_net and not container else None
        members = self._cgroup_members(pod, {r[1]: r for r in refs if r[0] in wanted}, include_unknown=not container)
        targets_held = {ns: holder_pids[ns] for ns in pid_targets}
        query = Query(pid_targets, net_target, targets_held, frozenset(m.pid for m in members))
        joined = [_settled(_outsider(j, pid_targets, net_target), pod.uid, {r[1]: r for r in refs})
                  for j in self.outsiders.find(query)]
        members += [m for m in joined if m.outside or not container or m.container == container]
        order = {name: i for i, name in enumerate(["sandbox", *(c.name for c in pod.containers)])}

        def rank(m: Member) -> int:  # the sandbox, containers as the runtime lists them, unknown ids, outsiders
            return len(order) + 1 if m.outside else order.get("sandbox" if m.sandbox else m.container, len(order))

        members.sort(key=lambda m: (rank(m), m.pid))
        return Discovery(pod, tuple(members), since, tuple(warnings))

    def _cgroup_members(self, pod: PodInfo, refs: Mapping[str, tuple[str, str, int, int]],
                        include_unknown: bool) -> list[Member]:
        pod_dir = self.cgroups.pod_dir(pod.uid)
        dirs = container_dirs(pod_dir) if pod_dir else {}
        members = []
        for cid, (name, _, pid, start) in refs.items():
            where = dirs.get(cid) or self._own_cgroup_dir(pid)
            sandbox = name == "sandbox"
            members += [Member(p, "" if sandbox else name, cid, sandbox=sandbox, root_pid=pid, root_start=start)
                        for p in (read_procs(where) if where else [])]
        if include_unknown:  # a container cgroup of the pod that the runtime did not tell us about
            for cid, where in dirs.items():
                if cid not in refs:
                    members += [Member(p, "", cid) for p in read_procs(where)]
        return members

    def _own_cgroup_dir(self, pid: int) -> Path | None:
        """Where a process lives, in the first hierarchy we read: for pods outside the kubepods layout."""
        hierarchies = self.cgroups.hierarchies()
        if not pid or not hierarchies:
            return None
        top = hierarchies[0]
        key = "" if top in (self.cgroups.mount, self.cgroups.mount / "unified") else top.name
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == key or (key and key in controllers.split(",")):
                return top / path.lstrip("/")
        return None

    # -- the listing --------------------------------------------------------------------------
    def list(self, ref: PodRef, container: str = "", cpu_sample: float = 0.0) -> ProcessList:
        """Every process of the pod (or of one container); CPU % over `cpu_sample` seconds, or the
        lifetime average (cpu time / time since start, as ps prints it) when that is 0."""
        found = self.discover(ref, container)
        first: dict[int, Sample] = {}
        if cpu_sample > 0:
            first = {m.pid: s for m in found.members if (s := first_sample(m, found.since_ticks))}
            time.sleep(cpu_sample)
        names, since, now = IdNames(), found.since_ticks, time.clock_gettime(time.CLOCK_BOOTTIME)
        processes = [p for m in found.members if (p := read_facts(m, since, names, first.get(m.pid), now))]
        warnings = list(found.warnings)
        if found.pod.source is Source.PROC:
            warnings.insert(0, "the container runtime's CRI API is unreachable: answered from /proc")
        warnings += [f'container "{c.name}" is not running (state: {c.state}): no processes'
                     for c in found.pod.containers if c.state != "running" and (not container or c.name == container)]
        return ProcessList(found.pod, tuple(processes), cpu_sample, tuple(warnings))

