"""One process's facts (ps's columns) read from /proc, for distroless pods too, without touching the pod.

Facts come from stat, status and cmdline, one read() each, through one /proc/PID directory fd per
process (pinned.py): reads through it fail once that process is gone instead of reaching a
successor, and a process that started after discovery began is checked for membership again before
it is attributed. They are not read with psutil, for two reasons. psutil.Process opens
/proc/PID/<file> by path for every fact, so a PID reused between two opens mixes two processes in
one answer, and its getters do not check identity (is_running, PID plus create time, is one more
read, after the fact). And it costs 2.5 times as much: on the testbed/bench/ps.py node (4,100
processes, 1,000 in the pod) the same listing took 208 ms with psutil reading the members' facts
and 83 ms as done here (medians of three runs; a psutil walk of the node took 834 ms). psutil gives
the boot time, and the tests check every fact against psutil's, as an independent reference.
"""

from __future__ import annotations

import os
from functools import cache

import psutil

from ..core.process import Member, ProcessFacts
from ..procfs import procns
from .cpu import Sample, cpu_percent
from .pinned import CLK_TCK, pid_dir, read_once, still_member
from .rootfiles import IdNames

STATES = {b"R": "running", b"S": "sleeping", b"D": "disk-sleep", b"T": "stopped", b"t": "tracing-stop",
          b"Z": "zombie", b"X": "dead", b"I": "idle", b"P": "parked", b"W": "waking", b"K": "wakekill"}
_PF_KTHREAD = 0x00200000
_ARGV_LIMIT = 64 << 10


@cache
def boot_time() -> float:
    """psutil's (btime of /proc/stat), read once: start times then agree exactly with psutil's create_time."""
    return psutil.boot_time()


def _status_facts(status: bytes) -> tuple[int, int, tuple[int, ...], int]:
    """Effective uid and gid, NSpid and VmRSS in bytes, looked up in the order the kernel prints them.
    RSS from status: stat's rss field is read from per-CPU counters without summing them (approximate).
    Raises ValueError or IndexError when lines are missing (the status of a process that is gone)."""
    at = status.index(b"\nUid:")
    uid = int(status[at + 5:status.index(b"\n", at + 5)].split()[1])
    at = status.index(b"\nGid:", at + 5)
    end = status.index(b"\n", at + 5)
    gid = int(status[at + 5:end].split()[1])
    nspid: tuple[int, ...] = ()
    if (at := status.find(b"\nNSpid:", end)) >= 0:
        end = status.index(b"\n", at + 7)
        nspid = tuple(map(int, status[at + 7:end].split()))
    rss = 0
    if (at := status.find(b"\nVmRSS:", end)) >= 0:  # none for kernel threads and zombies
        rss = int(status[at + 7:status.index(b"\n", at + 7)].split()[0]) * 1024
    return uid, gid, nspid, rss


def _cgroup_path(text: bytes) -> str:
    lines = [line.split(b":", 2) for line in text.splitlines()]
    paths = [p[2] for p in lines if len(p) == 3 and p[0] == b"0"] or [p[2] for p in lines if len(p) == 3]
    return paths[0].decode(errors="replace") if paths else ""


def read_facts(member: Member, since_ticks: int, names: IdNames | None = None,
               first: Sample | None = None, now: float = 0.0) -> ProcessFacts | None:
    """One process's facts through one dirfd; None when it exited (or changed hands) meanwhile.

    Three reads, each one read(): stat, status and cmdline (not for kernel threads). CPU % is over
    the window since `first` (start ticks, cpu ticks, monotonic time) when that is the same process,
    else the lifetime average up to `now` (CLOCK_BOOTTIME seconds); names come from `names`."""
    try:
        dirfd = pid_dir(member.pid)
    except OSError:
        return None
    try:
        stat = read_once(dirfd, "stat", 4096)
        # After the name, which may hold spaces and parentheses: [0] state, [1] ppid, [6] flags,
        # [11] utime, [12] stime, [17] threads, [19] start time.
        name_end = stat.rindex(b")")
        f = stat[name_end + 2:].split(b" ", 20)
        start = int(f[19])
        if start >= since_ticks and not still_member(dirfd, member):
            return None
        status = read_once(dirfd, "status", 16384, whole=True)
        argv = b"" if int(f[6]) & _PF_KTHREAD else read_once(dirfd, "cmdline", _ARGV_LIMIT)
        cgroup = _cgroup_path(procns.read_at(dirfd, "cgroup")) if member.outside else ""
        uid, gid, nspid, rss = _status_facts(status)
    except OSError as err:
        if err.errno in procns.GONE_ERRNOS:
            return None
        raise
    except (ValueError, IndexError):
        return None  # an empty stat or status: it is gone
    finally:
        os.close(dirfd)
    cpu = int(f[11]) + int(f[12])
    args = argv.decode(errors="replace").split("\0")
    if args[-1] == "":
        args.pop()  # the usual terminating NUL; a process that rewrote its title may have none
    users, groups = names.of(member, start) if names else ({}, {})
    return ProcessFacts(
        member=member, start_ticks=start, ppid=int(f[1]), nspid=nspid or (member.pid,), uid=uid, gid=gid,
        state=STATES.get(f[0]) or f[0].decode(), cpu_ticks=cpu, rss_bytes=rss, threads=int(f[17]),
        argv=tuple(args), comm=stat[stat.index(b"(") + 1:name_end].decode(errors="replace"), cgroup=cgroup,
        user=users.get(uid, ""), group=groups.get(gid, ""), cpu_percent=cpu_percent(start, cpu, first, now),
        start_time=boot_time() + start / CLK_TCK)
