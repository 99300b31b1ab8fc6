"""What a lab container really is, read without any of the agent's code: its cgroup's member list
and plain stat(2) of /proc/PID/ns/*. The load scenario checks every answer against this.

A container's init process, and so its namespaces, never change while it lives, so a truth taken
once just after the container started stays true for every answer about that container, even
after the container is gone and its PIDs are reused: an answer naming another PID or another
namespace is a misattribution whenever it was given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from testbed.lab.config import LabConfig
from testbed.lab.pods import LabPod

NS_TYPES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
HIERARCHIES = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")  # v1 pids, hybrid, v2


@dataclass(frozen=True)
class Truth:
    """A container's init process and its namespaces: {type: inode}."""

    container_id: str
    pid: int
    start_ticks: int
    namespaces: dict[str, int]


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat; None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def cgroup_dir(cfg: LabConfig, pod_uid: str, container_id: str) -> Path:
    for root in HIERARCHIES:
        path = Path(root + cfg.cgroup_root) / "besteffort" / f"pod{pod_uid}" / container_id
        if path.is_dir():
            return path
    raise FileNotFoundError(f"no cgroup for container {container_id} of pod {pod_uid}")


def container_truth(cfg: LabConfig, pod_uid: str, container_id: str) -> Truth:
    """The container's init: the member of its cgroup whose parent is not a member."""
    members = {int(line) for line in (cgroup_dir(cfg, pod_uid, container_id) / "cgroup.procs").read_text().split()}
    roots = [pid for pid in members if _ppid(pid) not in members]
    if len(roots) != 1:
        raise RuntimeError(f"container {container_id}: expected one init among {sorted(members)}, found {roots}")
    pid = roots[0]
    ticks = start_ticks(pid)
    namespaces = {t: os.stat(f"/proc/{pid}/ns/{t}").st_ino for t in NS_TYPES if os.path.exists(f"/proc/{pid}/ns/{t}")}
    if ticks is None or start_ticks(pid) != ticks:
        raise RuntimeError(f"container {container_id}: its init {pid} exited while being read")
    return Truth(container_id, pid, ticks, namespaces)


def pod_truth(cfg: LabConfig, pod: LabPod) -> dict[str, Truth]:
    """Every container of the pod (the sandbox included), by container id."""
    ids = [pod.sandbox_id, *(c.id for c in pod.containers.values())]
    return {cid: container_truth(cfg, pod.uid, cid) for cid in ids}


def in_pod(pid: int, ticks: int, pod_uid: str) -> bool | None:
    """Whether the process (pid, start ticks) lives in the pod's cgroups; None when it is gone."""
    try:
        cgroups = Path(f"/proc/{pid}/cgroup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if start_ticks(pid) != ticks:  # gone, or the PID is someone else's now: nothing to check
        return None
    return f"pod{pod_uid}" in cgroups
