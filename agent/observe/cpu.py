"""CPU % of a pod's processes: over a sampling window (two reads of stat's utime + stime, W seconds
apart, as top does), or without one the lifetime average (CPU time / time since start, as ps prints it)."""

from __future__ import annotations

import os
import time

from ..core.process import Member
from .pinned import CLK_TCK, current_stat, pid_dir

Sample = tuple[int, int, float]  # start ticks, cpu ticks (utime + stime), monotonic time


def first_sample(member: Member, since_ticks: int) -> Sample | None:
    """(start ticks, cpu ticks, monotonic time) of one process, for the first half of a CPU sample;
    None when it is gone or no longer the member found."""
    try:
        dirfd = pid_dir(member.pid)
    except OSError:
        return None
    try:
        raw = current_stat(dirfd, member, since_ticks)
    finally:
        os.close(dirfd)
    if raw is None:
        return None
    f = raw[raw.rindex(b")") + 2:].split(b" ", 20)
    return int(f[19]), int(f[11]) + int(f[12]), time.monotonic()


def cpu_percent(start: int, cpu: int, first: Sample | None, now: float = 0.0) -> float:
    """CPU % over the window since `first` when that was the same process (same start), else the
    lifetime average up to `now` (CLOCK_BOOTTIME seconds; default: the clock now)."""
    if first is not None and first[0] == start:
        elapsed = time.monotonic() - first[2]
        return round(100.0 * (cpu - first[1]) / CLK_TCK / elapsed, 1) if elapsed > 0 else 0.0
    alive = (now or time.clock_gettime(time.CLOCK_BOOTTIME)) - start / CLK_TCK
    return round(100.0 * cpu / CLK_TCK / alive, 1) if alive > 0 else 0.0
