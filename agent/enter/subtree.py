"""A session's processes in the pod: its reaper's subtree, found through /proc and killed in passes.

Within the pod, a session is its reaper's subtree: the reaper is a child subreaper, so what
daemonizes stays below it. A session ends by killing that subtree in passes until a pass finds
nothing alive (a killed process cannot fork, so each pass leaves only what was forked during it,
and the pod's pids limit bounds even a fork bomb); the reaper reaps what was killed, so nothing is
left as a zombie in the pod. A pod process that kills the reaper first leaves what the session had
started to the container's init, as kubectl exec leaves what a command daemonized: with the
container's own confinement, so nothing it could not have started itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time

from ..procfs.procns import stat_fields

log = logging.getLogger(__name__)
KILL_PASSES, KILL_WITHIN = 1000, 5.0


def _stat(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return stat_fields(f.read())


def _alive(pid: int) -> bool:
    """Not gone and not a zombie (a killed process stays in the task list until reaped)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return _stat(pid)[0] not in (b"Z", b"X")
    return False


def parent_pid(pid: int) -> int:
    """The parent of `pid`; 0 when it is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(_stat(pid)[1])
    return 0


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc/PID/task/*/children."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                found += kids
                todo += kids
    return found


def live_descendants(pid: int) -> list[int]:
    """What is alive below `pid` (zombies waiting for their reaper are not)."""
    return [p for p in _descendants(pid) if _alive(p)]


def kill_subtree(root: int, session: str) -> None:
    """SIGKILL every process below `root`, in passes until one finds nothing alive: a killed process
    forks no more, so each pass leaves at most what was forked while it ran. The root (the reaper)
    reaps them, then exits."""
    give_up = time.monotonic() + KILL_WITHIN
    for _ in range(KILL_PASSES):
        pids = live_descendants(root)
        if not pids:
            break
        if time.monotonic() > give_up:
            log.error("exec session processes still alive after killing for a while", extra={
                "session": session, "pids": pids[:20]})
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 0.1  # dead (zombies until the reaper runs) before walking again
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.0005)
