"""The lab's cgroups on every mounted hierarchy, shaped like the kubelet's cgroupfs driver.

Owns where a pod's and a container's cgroup directory is on each hierarchy, the pod-level
directories the lab makes itself for a pod pids limit (before RunPodSandbox, as the kubelet
does), and removing a cgroup subtree. `runtime.down` sweeps the lab's whole subtree with it.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from testbed.lab.config import LabConfig

MOUNTINFO = Path("/proc/self/mountinfo")


def hierarchies() -> dict[Path, frozenset[str]]:
    """Every cgroup hierarchy mounted here -> its controllers (v1: the mount's options, e.g. `pids`
    or `name=systemd`; v2: its cgroup.controllers, on a hybrid host often almost empty)."""
    found: dict[Path, frozenset[str]] = {}
    for line in MOUNTINFO.read_text().splitlines():
        mount, _, fs = line.partition(" - ")
        fstype, _source, options = fs.split()[:3]
        point = Path(mount.split()[4])
        if fstype == "cgroup":
            found[point] = frozenset(options.split(","))
        elif fstype == "cgroup2":
            found[point] = frozenset((point / "cgroup.controllers").read_text().split())
    return found


def with_controller(controller: str) -> list[Path]:
    """The hierarchies that have `controller` (none, one, or a v1 one and the v2 one)."""
    return sorted(point for point, controllers in hierarchies().items() if controller in controllers)


def pod_parent(cfg: LabConfig, pod_uid: str) -> str:
    """The pod's cgroup, as the kubelet names it for a best-effort pod (the lab's CRI cgroup_parent)."""
    return f"{cfg.cgroup_root}/besteffort/pod{pod_uid}"


def directory(controller: str, cgroup: str) -> Path:
    """`cgroup` (a path like /kubepods-lab/...) on the first hierarchy that has `controller`."""
    points = with_controller(controller)
    if not points:
        raise FileNotFoundError(f"no mounted cgroup hierarchy has the {controller} controller")
    return points[0] / cgroup.lstrip("/")


def processes(top: Path) -> set[int]:
    """Every process in `top` and in every cgroup below it."""
    found: set[int] = set()
    for procs in top.rglob("cgroup.procs"):
        with contextlib.suppress(FileNotFoundError):  # a cgroup removed while we walk
            found.update(int(p) for p in procs.read_text().split())
    return found


def make_pids_limited(cgroup: str, limit: int) -> list[Path]:
    """Create `cgroup` on every hierarchy with the pids controller and write its pids.max there.

    On a v2 hierarchy `pids` is first enabled in each ancestor's cgroup.subtree_control."""
    made = []
    for point, controllers in hierarchies().items():
        if "pids" not in controllers:
            continue
        target = point / cgroup.lstrip("/")
        if (point / "cgroup.subtree_control").exists():  # v2
            node = point
            for part in target.relative_to(point).parts:
                (node / "cgroup.subtree_control").write_text("+pids")
                node = node / part
                node.mkdir(exist_ok=True)
        target.mkdir(parents=True, exist_ok=True)
        (target / "pids.max").write_text(str(limit))
        made.append(target)
    return made


def remove_tree(top: Path, patience: float = 1.0) -> int:
    """rmdir `top` and everything below it, deepest first; a killed process leaves its cgroup a moment
    later, so each directory is retried for up to `patience` seconds. Returns how many were removed."""
    removed = 0
    below = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for d in [*below, top]:
        deadline = time.monotonic() + patience
        while True:
            try:
                d.rmdir()
                removed += 1
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
    return removed


def everywhere(cgroup: str) -> list[Path]:
    """`cgroup`'s directory on each hierarchy where it exists."""
    return [d for point in sorted(hierarchies()) if (d := point / cgroup.lstrip("/")).is_dir()]
