"""Pods known only from their cgroups: the /proc fallback's last resort, when no bundle names them.

Without readable bundles (unknown runtime, state dir not mounted) a pod can still be found by UID
through its cgroup directories (cgroups.py), but then containers are known by id only (named by
its first 13 characters, as crictl abbreviates), namespace options are unknown, and the sandbox is
the container whose init started first. Every member is checked against the cgroup /proc shows for
it, so a reused PID is never attributed. A pod by UID costs O(processes of the pod); only a listing
without a visible cgroup tree walks all of /proc (procfs.walk).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from pathlib import Path

from ..core.model import ContainerInfo, PodInfo, SandboxInfo, Source
from .cgroups import CgroupTree, ProcessCgroup, container_dirs, processes_in_pods, read_process_cgroup, read_procs

SHORT_ID = 13  # how `crictl ps` and `hack/lab status` abbreviate ids


def pod_by_uid(tree: CgroupTree, uid: str, proc: Path) -> PodInfo | None:
    """Pod `uid` from its cgroup directories; None when the tree has no such pod (or it has no member)."""
    pod_dir = tree.pod_dir(uid.lower())
    return _pod_from_dirs(uid.lower(), container_dirs(pod_dir), proc) if pod_dir else None


def pods_in_tree(tree: CgroupTree, known: Set[str], proc: Path) -> list[PodInfo]:
    """Every pod of the cgroup tree whose UID is not in `known`: O(pods), then O(processes of each)."""
    return [pod for uid, pod_dir in tree.all_pod_dirs().items()
            if uid not in known and (pod := _pod_from_dirs(uid, container_dirs(pod_dir), proc))]


def pods_from_proc_walk(proc: Path) -> list[PodInfo]:
    """Every pod some process of the node is in, from one walk over /proc: when no tree is visible."""
    by_pod: dict[str, dict[str, list[ProcessCgroup]]] = {}
    for p in processes_in_pods(proc):
        if p.match and p.match.container_id:
            by_pod.setdefault(p.match.pod_uid, {}).setdefault(p.match.container_id, []).append(p)
    return [pod for uid, members in by_pod.items() if (pod := _pod_from_members(uid, members))]


def _pod_from_dirs(uid: str, dirs: Mapping[str, Path], proc: Path) -> PodInfo | None:
    """A pod from its container cgroups; the sandbox is the container whose init started first."""
    members = {cid: _container_members(cid, read_procs(d), proc) for cid, d in dirs.items()}
    return _pod_from_members(uid, members)


def _container_members(cid: str, pids: Iterable[int], proc: Path) -> list[ProcessCgroup]:
    """The processes of `pids` that /proc shows in container `cid`'s cgroup (a PID may have changed hands)."""
    found = []
    for pid in pids:
        p = read_process_cgroup(pid, proc)
        if p is not None and p.match is not None and p.match.container_id == cid:
            found.append(p)
    return found


def _pod_from_members(uid: str, members: Mapping[str, list[ProcessCgroup]]) -> PodInfo | None:
    """Containers known by id only: named by the first 13 characters of the id, options unknown."""
    if not members:
        return None
    inits = {cid: _init_of(procs) for cid, procs in members.items()}
    first = min(((p.start_time, p.pid, cid) for cid, p in inits.items() if p), default=None)
    sandbox = None
    if first is not None:
        start, pid, sandbox_id = first
        sandbox = SandboxInfo(id=sandbox_id, state="ready", pid=pid, start_time=start)
    runtime = next((p.match.runtime for procs in members.values() for p in procs if p.match and p.match.runtime), "")
    containers = [
        ContainerInfo(name=cid[:SHORT_ID], id=cid, state="running" if p else "exited",
                      pid=p.pid if p else 0, start_time=p.start_time if p else 0)
        for cid, p in inits.items() if sandbox is None or cid != sandbox.id
    ]
    containers.sort(key=lambda c: (c.state != "running", c.start_time, c.id))
    return PodInfo(namespace="", name="", uid=uid, source=Source.PROC, sandbox=sandbox,
                   containers=tuple(containers), runtime=runtime)


def _init_of(procs: list[ProcessCgroup]) -> ProcessCgroup | None:
    """The container's init: the member whose parent (the shim) is outside the container, oldest first
    (exec'd processes have the shim as parent too)."""
    pids = {p.pid for p in procs}
    roots = [p for p in procs if p.ppid not in pids] or procs
    return min(roots, key=lambda p: (p.start_time, p.pid), default=None)
