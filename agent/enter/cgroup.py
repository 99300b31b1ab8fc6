"""The agent's cgroup for its exec helpers, and the sweep of what agents that died left behind.

The helpers (the fork server and its spare enterers) live in a cgroup of the agent's
(nsinspect-exec.<agent pid>, under the agent's own, on the unified hierarchy), joined once by the
fork server (a move costs an RCU grace period). An agent that starts finds the cgroups of agents
that died and kills what is in them. (A session's own processes are in its container's cgroups,
as a CRI exec's are: see confine.py.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)
CGROUP_MOUNT = Path("/sys/fs/cgroup")


def _unified_mount() -> Path | None:
    for path in (CGROUP_MOUNT, CGROUP_MOUNT / "unified"):
        if (path / "cgroup.controllers").exists():
            return path
    return None


class Cgroup:
    """The agent's cgroup for its exec helpers: <own cgroup>/nsinspect-exec.<agent pid>."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls) -> Cgroup | None:
        mount = _unified_mount()
        if mount is None:
            log.warning("no unified cgroup hierarchy: the exec helpers run in the agent's cgroup")
            return None
        with open("/proc/self/cgroup") as f:
            own = next((line.strip()[3:] for line in f if line.startswith("0::")), "/")
        parent = mount / own.lstrip("/")
        _sweep(parent)
        path = parent / f"nsinspect-exec.{os.getpid()}"
        try:
            path.mkdir(exist_ok=True)
        except OSError as err:
            log.warning("cannot make a cgroup for the exec helpers: they run in the agent's",
                        extra={"cgroup": str(path), "error": str(err)})
            return None
        return cls(path)

    def close(self) -> None:
        _remove(self.path)


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
    except OSError:
        return False
    return True


def _pids(path: Path) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    return []


def _remove(path: Path, timeout: float = 2.0) -> None:
    """Kill everything in a session cgroup and remove it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _write(path / "cgroup.kill", "1"):
            for pid in _pids(path):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
    log.error("cannot remove the exec sessions' cgroup", extra={"cgroup": str(path)})


def _sweep(parent: Path) -> None:
    """Kill and remove what an agent that died left behind."""
    with contextlib.suppress(OSError):
        for stale in parent.glob("nsinspect-exec.*"):
            pid = stale.name.rpartition(".")[2]
            if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
                log.warning("killing what a dead agent's exec sessions left",
                            extra={"cgroup": str(stale), "pids": _pids(stale)})
                _remove(stale)
