"""Kubernetes cgroup layouts: which pod and container a cgroup path names, and where a pod's cgroups are.

The kubelet puts every pod under a "kubepods" cgroup (`--cgroup-root` only adds a prefix) and the
runtime puts each container in a child of the pod's cgroup, so a path alone tells pod UID and
container id, whatever the driver (cgroupfs or systemd), cgroup version, runtime or nesting (kind,
k3s). Knowing the shapes also lets us go straight to one pod's cgroup directories and read their
members, which costs O(processes of the pod) instead of a walk over /proc.

Parsing is pure; the functions that touch /proc or /sys/fs/cgroup say so in their names.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..procfs import procns
from ..procfs.walk import DIR_FLAGS, each_process

CGROUP_MOUNT = Path("/sys/fs/cgroup")

# A pod UID is a dashed UUID (underscores in systemd unit names); static pods use a 32-hex hash.
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
# cgroupfs: "pod<uid>"; systemd: "kubepods-burstable-pod<uid_>.slice" (any "...-" prefix, e.g. kind's "kubelet-").
_POD = re.compile(rf"(?:[\w.-]*-)?pod({_UID})(?:\.slice)?")
# The container's cgroup: a bare 64-hex id (cgroupfs), or "<runtime>-<id>.scope" (systemd and CRI-O).
_CONTAINER = re.compile(r"(?:(cri-containerd|crio|docker|cri-o)-)?([0-9a-f]{64})(?:\.scope)?")
_RUNTIMES = {"cri-containerd": "containerd", "crio": "cri-o", "cri-o": "cri-o", "docker": "docker"}
_QOS = ("burstable", "besteffort")
# v1 controllers that runc always joins, in the order we look for pods in them.
_V1_HIERARCHIES = ("pids", "memory", "cpu,cpuacct", "cpu", "systemd")


@dataclass(frozen=True)
class CgroupMatch:
    """A Kubernetes cgroup: `container_id` is empty for the pod's own cgroup (and runtime helpers in it)."""

    pod_uid: str  # dashed, as the API server spells it
    container_id: str = ""
    runtime: str = ""  # from the systemd scope prefix: "containerd", "cri-o", "docker"; "" when unknown


@dataclass(frozen=True)
class ProcessCgroup:
    """One process as /proc showed it in a single read: identity, parent, and its Kubernetes cgroup."""

    pid: int
    start_time: int  # clock ticks after boot, as procns.start_time
    ppid: int
    match: CgroupMatch | None


def normalise_uid(uid: str) -> str:
    return uid.replace("_", "-").lower()


def parse_cgroup_path(path: str) -> CgroupMatch | None:
    """The pod and container a cgroup path names, or None when it is not inside a Kubernetes pod."""
    parts = [p for p in path.split("/") if p and p != ".."]
    for i, part in enumerate(parts):
        head, _, rest = part.partition(":")
        pod = _POD.fullmatch(head)
        if pod is None:
            continue
        uid = normalise_uid(pod.group(1))
        if rest:  # a systemd name on a cgroupfs runtime: "<pod slice>:<prefix>:<id>" in one directory
            prefix, _, cid = rest.partition(":")
            ctr = _CONTAINER.fullmatch(cid)
            return CgroupMatch(uid, ctr.group(2), _RUNTIMES.get(prefix, "")) if ctr else CgroupMatch(uid)
        if i + 1 < len(parts) and (ctr := _CONTAINER.fullmatch(parts[i + 1])):
            return CgroupMatch(uid, ctr.group(2), _RUNTIMES.get(ctr.group(1) or "", ""))
        return CgroupMatch(uid)
    return None


def parse_cgroup_file(text: str) -> CgroupMatch | None:
    """The best match in a /proc/PID/cgroup file: a line naming a container beats a pod-level one."""
    best: CgroupMatch | None = None
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        match = parse_cgroup_path(fields[2])
        if match and match.container_id:
            return match
        best = best or match
    return best


def read_process_cgroup(pid: int, proc: Path = Path("/proc")) -> ProcessCgroup | None:
    """Read one process's stat and cgroup through a single /proc/PID fd; None once it is gone.

    The fd stays bound to the process it was opened for, so both reads describe the same process
    even if the PID is reused meanwhile (reads through it then fail instead). Zombies count as gone.
    """
    try:
        dirfd = os.open(proc / str(pid), DIR_FLAGS)
    except OSError:
        return None
    try:
        return _read_cgroup_at(pid, dirfd)
    finally:
        os.close(dirfd)


def _read_cgroup_at(pid: int, dirfd: int) -> ProcessCgroup | None:
    """The reads of read_process_cgroup through a /proc/PID fd already open."""
    try:
        fields = procns.stat_fields(procns.read_at(dirfd, "stat"))
        if fields[0] in (b"Z", b"X"):
            return None
        cgroup = procns.read_at(dirfd, "cgroup").decode(errors="replace")
        return ProcessCgroup(pid, int(fields[19]), int(fields[1]), parse_cgroup_file(cgroup))
    except OSError as err:
        if err.errno in procns.GONE_ERRNOS:
            return None
        raise
    except (ValueError, IndexError):
        return None


def processes_in_pods(proc: Path = Path("/proc")) -> list[ProcessCgroup]:
    """Every process of the node that lives in a pod. O(processes of the node): only for list_pods
    when neither the runtime's state nor the cgroup tree can be read."""
    found: list[ProcessCgroup] = []

    def keep_pod_process(pid: int, dirfd: int) -> None:
        if (p := _read_cgroup_at(pid, dirfd)) and p.match:
            found.append(p)

    proc_fd = os.open(proc, DIR_FLAGS)
    try:
        each_process(keep_pod_process, proc_fd)
    finally:
        os.close(proc_fd)
    return found


MAX_NESTED_CGROUPS = 1024


def read_procs(cgroup_dir: Path) -> list[int]:
    """Members of a cgroup and of its descendants (a container may nest cgroups, e.g. systemd inside).

    The subtree may be the container's to shape, so the walk is iterative and capped.
    """
    pids: list[int] = []
    todo, visited = [cgroup_dir], 0
    while todo and visited < MAX_NESTED_CGROUPS:
        current = todo.pop()
        visited += 1
        with contextlib.suppress(OSError, ValueError):  # a cgroup removed meanwhile has no members
            pids.extend(int(p) for p in (current / "cgroup.procs").read_text().split())
        todo.extend(_child_dirs(current))
    return pids


class CgroupTree:
    """Finds pods' cgroup directories directly, in the v2 hierarchy or a v1 one that runc always joins.

    The "kubepods" roots are found once by a shallow scan (depth 4 covers kind and k3s nesting) and
    cached; a UID that is not under them triggers at most one rescan per `rescan_after` seconds.
    """

    def __init__(self, mount: Path = CGROUP_MOUNT, rescan_after: float = 1.0) -> None:
        self.mount = mount
        self.rescan_after = rescan_after
        self._roots: list[Path] | None = None
        self._scanned_at = 0.0

    def hierarchies(self) -> list[Path]:
        """Mounted hierarchies to look in, the unified (v2) one first."""
        if (self.mount / "cgroup.controllers").exists():
            return [self.mount]
        found = [self.mount / "unified"] if (self.mount / "unified" / "cgroup.procs").exists() else []
        return found + [self.mount / h for h in _V1_HIERARCHIES if (self.mount / h / "cgroup.procs").exists()]

    def roots(self, refresh: bool = False) -> list[Path]:
        """The topmost "kubepods" directories of every hierarchy (several for nested or test clusters)."""
        if self._roots is None or (refresh and time.monotonic() - self._scanned_at >= self.rescan_after):
            self._roots = [r for h in self.hierarchies() for r in _find_kubepods(h, depth=4)]
            self._scanned_at = time.monotonic()
        return self._roots

    def pod_dir(self, uid: str) -> Path | None:
        """The pod's cgroup directory (v2 preferred): a few stats per kubepods root, no listing."""
        return self._pod_dir(uid, self.roots()) or self._pod_dir(uid, self.roots(refresh=True))

    @staticmethod
    def _pod_dir(uid: str, roots: list[Path]) -> Path | None:
        for root in roots:
            for candidate in pod_dir_candidates(root, uid):
                if candidate.is_dir():
                    return candidate
        return None

    def all_pod_dirs(self) -> dict[str, Path]:
        """Every pod cgroup by UID (the first hierarchy that has it): O(pods), for the node map."""
        pods: dict[str, Path] = {}
        for root in self.roots(refresh=True):
            for d in _subdirs(root, depth=2):
                match = parse_cgroup_path(str(d.relative_to(root.parent)))
                if match and not match.container_id:
                    pods.setdefault(match.pod_uid, d)
        return pods


def pod_dir_candidates(root: Path, uid: str) -> list[Path]:
    """Where the kubelet puts pod `uid` under a kubepods root, for each QoS class (guaranteed first)."""
    if root.name.endswith(".slice"):
        stem, u = root.name.removesuffix(".slice"), uid.replace("-", "_")
        return [root / f"{stem}-pod{u}.slice",
                *(root / f"{stem}-{q}.slice" / f"{stem}-{q}-pod{u}.slice" for q in _QOS)]
    return [root / f"pod{uid}", *(root / q / f"pod{uid}" for q in _QOS)]


def container_dirs(pod_dir: Path) -> dict[str, Path]:
    """The container cgroups of one pod cgroup, by container id (runtime helpers such as conmon left out)."""
    found = {}
    for sub in _subdirs(pod_dir, depth=1):
        if ctr := _CONTAINER.fullmatch(sub.name):
            found[ctr.group(2)] = sub
    return found


def _child_dirs(top: Path) -> list[Path]:
    """Subdirectories of a cgroup dir; none when it vanished or cannot be read."""
    try:
        with os.scandir(top) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _subdirs(top: Path, depth: int) -> Iterator[Path]:
    for d in _child_dirs(top):
        yield d
        if depth > 1:
            yield from _subdirs(d, depth - 1)


def _find_kubepods(top: Path, depth: int) -> Iterator[Path]:
    for d in _child_dirs(top):
        if "kubepods" in d.name:
            yield d
        elif depth > 1 and not _CONTAINER.fullmatch(d.name):
            yield from _find_kubepods(d, depth - 1)
