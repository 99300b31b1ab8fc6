"""Resolve pods to sandboxes, containers and init PIDs without CRI: from the runtime's bundles, else cgroups.

The fallback for when the CRI socket is unreachable (containers keep running under their shims).
Names, ids and namespace options come from the runtime's OCI bundles (bundles.py); every PID the
runtime wrote down is checked against the cgroup /proc shows for it, so a reused PID is never
attributed. A pod no bundle names is looked for in the cgroup tree alone (cgroup_pods.py), known
by UID and container ids only. Resolution reads O(containers of the node) cached bundle entries
and O(processes of the pod) files under /proc; only list_pods without bundles or a visible cgroup
tree walks all of /proc.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..core.errors import InvalidArgument, NotFound, RuntimeUnavailable
from ..core.model import ContainerInfo, NamespaceOptions, PodInfo, PodRef, SandboxInfo, Source
from ..core.nsid import NamespaceId
from .bundles import DEFAULT_STATE_DIRS, Bundle, BundleStore, read_pid
from .cgroup_pods import pod_by_uid, pods_from_proc_walk, pods_in_tree
from .cgroups import CGROUP_MOUNT, CgroupTree, ProcessCgroup, read_process_cgroup
from .source import PodList

__all__ = ["DEFAULT_STATE_DIRS", "ProcResolver"]

_PROC_NS = re.compile(r"/proc/(\d+)/ns/(\w+)")
_PROC_NAMES = {"network": "net", "pid": "pid", "ipc": "ipc"}  # OCI namespace type -> /proc/PID/ns name
_PIDFILE_SLACK_S = 2.0  # boot-time clock against wall clock: a reused PID starts long after the pid file


@dataclass(frozen=True)
class _Member:
    """A bundle and the process its pid file names, if that process is still the bundle's."""

    bundle: Bundle
    process: ProcessCgroup | None


class ProcResolver:
    """The PodSource of the runtime's records on disk (source.py): answers like CriResolver, with
    `source=Source.PROC`; safe to share between threads."""

    def __init__(self, state_dirs: Sequence[Path] = DEFAULT_STATE_DIRS, proc: Path = Path("/proc"), *,
                 cgroup_mount: Path = CGROUP_MOUNT) -> None:
        self.proc = proc
        self.store = BundleStore(tuple(state_dirs))
        self.tree = CgroupTree(cgroup_mount)

    # -- public -------------------------------------------------------------------------------
    def resolve(self, ref: PodRef, fresh: bool = False) -> PodInfo:
        """The pod by namespace/name, by UID, or by both (which must then agree). Always fresh: the
        bundles are rescanned on every call (their specs cached only while their files are unchanged).

        A pod the bundles do not know is looked up by UID in its cgroups; that answer has no
        namespace, name or options (nothing on disk says them), so it cannot check a name either.
        """
        if not (ref.name or ref.uid):
            raise InvalidArgument("a pod needs a name or a UID")
        scan = self.store.scan()
        sandboxes = [b for b in scan.bundles if b.is_sandbox and _matches(b, ref)]
        if sandboxes:
            return self._bundle_pod(sandboxes, _by_sandbox(scan.bundles))
        _explain_mismatch(ref, scan.bundles)
        if ref.uid:
            pod = pod_by_uid(self.tree, ref.uid, self.proc)
            if pod is not None:
                return pod
        elif not scan.available:
            dirs = ", ".join(str(d) for d in self.store.state_dirs)
            raise RuntimeUnavailable(f"cannot find pod {ref} by name: no container runtime state is readable "
                                     f"in {dirs}; without it only a lookup by UID works (from cgroups)")
        raise NotFound(f"pod {ref} not found on this node")

    def list_pods(self) -> PodList:
        """Every pod with a live sandbox or container: from bundles, plus any pod only cgroups show."""
        scan = self.store.scan()
        groups: dict[str, list[Bundle]] = {}
        for b in scan.bundles:
            if b.is_sandbox:
                groups.setdefault(b.pod_uid or f"{b.pod_namespace}/{b.pod_name}", []).append(b)
        by_sandbox = _by_sandbox(scan.bundles)
        pods = [self._bundle_pod(group, by_sandbox) for group in groups.values()]
        if self.tree.roots(refresh=True):
            pods.extend(pods_in_tree(self.tree, {p.uid for p in pods}, self.proc))
        elif not scan.available:
            pods.extend(pods_from_proc_walk(self.proc))
        return PodList([p for p in pods if _pod_alive(p)], from_cri=False)

    # -- from bundles -------------------------------------------------------------------------
    def _member(self, bundle: Bundle) -> _Member:
        return _Member(bundle, self._process(bundle))

    def _process(self, bundle: Bundle) -> ProcessCgroup | None:
        """The bundle's init process, unless it exited or its PID now names another process."""
        pid = read_pid(bundle)
        if pid <= 0:
            return None
        p = read_process_cgroup(pid, self.proc)
        if p is None:
            return None
        if p.match is not None and p.match.container_id:
            return p if p.match.container_id == bundle.id else None
        # A cgroup layout we cannot read ids from: the process must be older than its pid file.
        try:
            written = bundle.pid_file.stat().st_mtime if bundle.pid_file else 0.0
        except OSError:
            return None
        started = _boot_time(self.proc) + p.start_time / _clock_ticks()
        return p if started <= written + _PIDFILE_SLACK_S else None

    def _bundle_pod(self, sandboxes: list[Bundle], by_sandbox: Mapping[str, list[Bundle]]) -> PodInfo:
        # A restarted pod leaves old sandboxes behind: the one whose init is alive wins, then the newest.
        members = [self._member(sb) for sb in sandboxes]
        sb = max(members, key=lambda m: (m.process is not None, m.bundle.created_at,
                                         m.process.start_time if m.process else 0))
        containers = _latest_per_name([self._member(b) for b in by_sandbox.get(sb.bundle.id, ())])
        sb_pid = sb.process.pid if sb.process else 0
        pid_of = {m.process.pid: m.bundle.id for m in containers if m.process}
        infos = []
        for m in containers:
            # A containerd bundle is a task, so it started; a CRI-O container starts when its pidfile appears.
            started = m.bundle.runtime == "containerd" or bool(m.bundle.pid_file and m.bundle.pid_file.exists())
            state = "running" if m.process else "exited" if started else "created"
            infos.append(ContainerInfo(
                name=m.bundle.name, id=m.bundle.id, state=state, pid=m.process.pid if m.process else 0,
                image=m.bundle.image, start_time=m.process.start_time if m.process else 0,
                options=self._options(m.bundle, sb.bundle, sb_pid, pid_of), created_at=m.bundle.created_at,
            ))
        infos.sort(key=lambda c: (c.created_at, c.start_time, c.name))
        first = sb.bundle
        sandbox = SandboxInfo(id=first.id, state="ready" if sb.process else "notready", pid=sb_pid,
                              start_time=sb.process.start_time if sb.process else 0,
                              options=_sandbox_options(first, infos), hostname=first.hostname)
        return PodInfo(namespace=first.pod_namespace, name=first.pod_name, uid=first.pod_uid, source=Source.PROC,
                       sandbox=sandbox, containers=tuple(infos), runtime=first.runtime)

    def _options(self, c: Bundle, sb: Bundle, sb_pid: int, pid_of: Mapping[int, str]) -> NamespaceOptions | None:
        """CRI's NamespaceOption as the OCI spec carries it out; None where a namespace cannot be placed."""
        modes: dict[str, str] = {}
        target = ""
        for oci_type in _PROC_NAMES:
            found = self._namespace_mode(c.namespace_path(oci_type), oci_type, sb, sb_pid, pid_of)
            if found is None:
                return None
            modes[oci_type], target = found[0], target or found[1]
        return NamespaceOptions(network=modes["network"], pid=modes["pid"], ipc=modes["ipc"], target_id=target)

    def _namespace_mode(self, path: str | None, oci_type: str, sb: Bundle, sb_pid: int,
                        pid_of: Mapping[int, str]) -> tuple[str, str] | None:
        """The CRI mode (and target) a container's namespace path means: NODE when it has none of its
        own, CONTAINER for a new one, else whose it joins; None when it cannot be placed."""
        if path is None:
            return "NODE", ""
        if not path:
            return "CONTAINER", ""
        # Joining the sandbox's namespace means the host's when the sandbox itself has none of its own.
        via_sandbox = ("NODE" if sb.namespace_path(oci_type) is None else "POD"), ""
        m = _PROC_NS.fullmatch(path)
        pid = int(m.group(1)) if m else 0
        if (pid and pid == sb_pid) or path == sb.namespace_path(oci_type):
            return via_sandbox
        if oci_type == "pid" and pid in pid_of:
            return "TARGET", pid_of[pid]
        # The spec holds PIDs from creation time: compare the namespaces themselves.
        ns = _PROC_NAMES[oci_type]
        wanted = _namespace_at(self.proc / str(pid) / "ns" / ns if pid else Path(path), ns)
        if wanted is None:
            return None
        if sb_pid and wanted == _namespace_at(self.proc / str(sb_pid) / "ns" / ns, ns):
            return via_sandbox
        if oci_type == "pid":
            for other, cid in pid_of.items():
                if wanted == _namespace_at(self.proc / str(other) / "ns" / ns, ns):
                    return "TARGET", cid
        if wanted == _namespace_at(self.proc / "1" / "ns" / ns, ns):
            return "NODE", ""
        return None



def _by_sandbox(bundles: Iterable[Bundle]) -> dict[str, list[Bundle]]:
    index: dict[str, list[Bundle]] = {}
    for b in bundles:
        if not b.is_sandbox:
            index.setdefault(b.sandbox_id, []).append(b)
    return index


def _latest_per_name(members: list[_Member]) -> list[_Member]:
    """A restarted container leaves its previous attempts behind: keep the running one, else the newest."""
    latest: dict[str, _Member] = {}
    for m in members:
        have = latest.get(m.bundle.name)
        if have is None or (m.process is not None, m.bundle.created_at) > (have.process is not None,
                                                                            have.bundle.created_at):
            latest[m.bundle.name] = m
    return list(latest.values())


def _sandbox_options(sb: Bundle, containers: Iterable[ContainerInfo]) -> NamespaceOptions:
    """The pod-level modes: NODE where the sandbox joins the host's namespace; pid POD only if shared."""
    def own(oci_type: str) -> str:
        return "NODE" if sb.namespace_path(oci_type) is None else "POD"

    pid = own("pid")
    if pid == "POD" and not any(c.options and c.options.pid == "POD" for c in containers):
        pid = "CONTAINER"
    return NamespaceOptions(network=own("network"), pid=pid, ipc=own("ipc"))


def _matches(sb: Bundle, ref: PodRef) -> bool:
    if ref.uid and sb.pod_uid.lower() != ref.uid.lower():
        return False
    return not ref.name or (sb.pod_name == ref.name and sb.pod_namespace == (ref.namespace or "default"))


def _explain_mismatch(ref: PodRef, bundles: Iterable[Bundle]) -> None:
    """Given both name and UID, a pod that matches only one of them is a different pod: say which."""
    if not (ref.uid and ref.name):
        return
    for b in bundles:
        if b.is_sandbox and b.pod_name == ref.name and b.pod_namespace == (ref.namespace or "default"):
            raise NotFound(f"pod {ref} not found on this node: the pod of that name here has UID {b.pod_uid}, "
                           f"not {ref.uid}")
        if b.is_sandbox and b.pod_uid.lower() == ref.uid.lower():
            raise NotFound(f"pod {ref} not found on this node: UID {ref.uid} here is pod "
                           f"{b.pod_namespace}/{b.pod_name}")


def _pod_alive(pod: PodInfo) -> bool:
    return (pod.sandbox is not None and pod.sandbox.state == "ready") or any(
        c.state == "running" for c in pod.containers)


def _namespace_at(path: Path, ns: str) -> NamespaceId | None:
    """The namespace of type `ns` a /proc/PID/ns link or a bind-mounted namespace file is; None if unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return NamespaceId(ns, st.st_dev, st.st_ino)


@cache
def _boot_time(proc: Path) -> float:
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


@cache
def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")
