"""A pod's processes as the node sees them, for distroless pods too, without touching the pod.

Members come from the cgroup.procs of the sandbox's and containers' cgroups: O(processes of the
pod). Processes that joined the pod's pid or network namespace from elsewhere (nsenter, an exec
helper) live in other cgroups, so one pass over /proc checks every other process (agent/observe/outsiders.py,
shared by concurrent requests). The node's own namespaces never count, so hostPID/hostNetwork pods
do not list the node.

Facts come from stat, status and cmdline, one read() each, through one /proc/PID directory fd per
process: reads through it fail once that process is gone instead of reaching a successor, and a
process that started after discovery began is checked for membership again before it is attributed
(pid_max can be as low as 32768). They are not read with psutil, for two reasons. psutil.Process
opens /proc/PID/<file> by path for every fact, so a PID reused between two opens mixes two processes
in one answer, and its getters do not check identity (is_running, PID plus create time, is one more
read, after the fact). And it costs 2.5 times as much: on the testbed/bench/ps.py node (4,100
processes, 1,000 in the pod) the same listing took 208 ms with psutil reading the members' facts
and 83 ms as done here (medians of three runs; a psutil walk of the node took 834 ms). psutil gives
the boot time, and the tests check every fact against psutil's, as an independent reference.

User and group names come from each container's own /etc/passwd and /etc/group, opened below its
/proc/PID/root with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), so neither "..", absolute
symlinks nor /proc magic links lead out of the container. Nothing is written (O_NOATIME).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import psutil

from ..core.model import PodInfo, PodRef, Source
from ..procfs import procns
from ..resolve.cgroups import CgroupTree, container_dirs, parse_cgroup_file, read_procs
from ..resolve.fallback import Resolver
from .outsiders import Joined, OutsiderScan, Query

CLK_TCK = os.sysconf("SC_CLK_TCK")
STATES = {b"R": "running", b"S": "sleeping", b"D": "disk-sleep", b"T": "stopped", b"t": "tracing-stop",
          b"Z": "zombie", b"X": "dead", b"I": "idle", b"P": "parked", b"W": "waking", b"K": "wakekill"}
_PF_KTHREAD = 0x00200000
_NAMES_LIMIT = 4 << 20  # an /etc/passwd bigger than this is not read
_ARGV_LIMIT = 64 << 10


@dataclass(frozen=True)
class Member:
    """A discovered process and why it belongs to the pod."""

    pid: int
    container: str = ""  # name; empty for the sandbox, outsiders and containers the runtime did not name
    container_id: str = ""
    sandbox: bool = False
    outside: bool = False  # in no container of the pod: found through its namespaces
    joined: tuple[str, ...] = ()  # outsiders: "pid:<holder>", "net"
    pid_ns: int = 0  # inodes, read for outsiders only
    net_ns: int = 0
    root_pid: int = 0  # whose /proc/PID/root holds the container's /etc/passwd (0: the process's own)
    root_start: int = 0


@dataclass(frozen=True)
class Discovery:
    pod: PodInfo
    members: tuple[Member, ...]
    since_ticks: int  # boot-time clock ticks when discovery began: anything started later is checked again
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProcessFacts:
    member: Member
    start_ticks: int
    ppid: int
    nspid: tuple[int, ...]
    uid: int
    gid: int
    state: str
    cpu_ticks: int  # utime + stime
    rss_bytes: int
    threads: int
    argv: tuple[str, ...]
    comm: str
    cgroup: str = ""  # outsiders only: the cgroup they live in (the unified hierarchy's path if any)
    user: str = ""
    group: str = ""
    cpu_percent: float = 0.0

    @property
    def pid_in_pod(self) -> int:
        """The last NSpid entry when the process is in one of the pod's pid namespaces, else 0."""
        m = self.member
        return self.nspid[-1] if self.nspid and (not m.outside or any(j.startswith("pid:") for j in m.joined)) else 0

    @property
    def start_time(self) -> float:
        return boot_time() + self.start_ticks / CLK_TCK


@dataclass(frozen=True)
class ProcessList:
    pod: PodInfo
    processes: tuple[ProcessFacts, ...]
    cpu_sample: float  # seconds; 0 means lifetime averages
    warnings: tuple[str, ...]


# -- clocks and /proc -----------------------------------------------------------------------------
@cache
def boot_time() -> float:
    """psutil's (btime of /proc/stat), read once: start times then agree exactly with psutil's create_time."""
    return psutil.boot_time()


def now_ticks() -> int:
    """The boot-time clock in the unit of /proc/PID/stat's start time."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * CLK_TCK)


def _ino(link: str) -> int:
    """"pid:[4026531836]" -> 4026531836."""
    return int(link[link.index("[") + 1:-1]) if link else 0


def _pid_dir(pid: int) -> int:
    """/proc/PID as an O_PATH fd: only ever a base for openat and readlinkat, so it need not be opened
    for reading. It stays bound to that process all the same."""
    return os.open(str(pid), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=procns.proc_fd())


def _read_once(dirfd: int, name: str, size: int, whole: bool = False) -> bytes:
    """One read: procfs hands over a whole stat, status or cmdline (up to `size`) at once. With
    `whole`, a read that filled `size` goes on to the end (a status listing thousands of groups)."""
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        data = os.read(fd, size)
        if whole and len(data) == size:
            chunks = [data]
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


def _current(dirfd: int, member: Member, since_ticks: int) -> bytes | None:
    """The member's /proc/PID/stat, if it is still the member found; None when it is gone or a stranger.

    A process that started after discovery began may have taken over a PID that was listed: it is
    accepted only if it is a member in its own right (same container cgroup, or same namespaces).
    """
    try:
        raw = _read_once(dirfd, "stat", 4096)
        start = int(raw[raw.rindex(b")") + 2:].split(b" ", 20)[19])
        return raw if start < since_ticks or _still_member(dirfd, member) else None
    except (OSError, ValueError, IndexError):
        return None


def open_member(member: Member, since_ticks: int) -> tuple[int, list[bytes]] | None:
    """A /proc/PID dirfd and [name, *stat fields from "state" on], if the process is still the member
    found (see _current); None otherwise. The caller closes the dirfd."""
    try:
        dirfd = _pid_dir(member.pid)
    except OSError:
        return None
    raw = _current(dirfd, member, since_ticks)
    if raw is None:
        os.close(dirfd)
        return None
    return dirfd, [raw[raw.index(b"(") + 1:raw.rindex(b")")], *procns.stat_fields(raw)]


def _still_member(dirfd: int, member: Member) -> bool:
    if not member.outside:
        return member.container_id in procns.read_at(dirfd, "cgroup").decode(errors="replace")
    try:
        pid_ok = not member.pid_ns or _ino(os.readlink("ns/pid", dir_fd=dirfd)) == member.pid_ns
        net_ok = not member.net_ns or _ino(os.readlink("ns/net", dir_fd=dirfd)) == member.net_ns
    except OSError:
        return False
    return pid_ok and net_ok and bool(member.pid_ns or member.net_ns)


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


def read_facts(member: Member, since_ticks: int, names: _Names | None = None,
               first: tuple[int, int, float] | None = None, now: float = 0.0) -> ProcessFacts | None:
    """One process's facts through one dirfd; None when it exited (or changed hands) meanwhile.

    Three reads, each one read(): stat, status and cmdline (not for kernel threads). CPU % is over
    the window since `first` (start ticks, cpu ticks, monotonic time) when that is the same process,
    else the lifetime average up to `now` (CLOCK_BOOTTIME seconds); names come from `names`."""
    try:
        dirfd = _pid_dir(member.pid)
    except OSError:
        return None
    try:
        stat = _read_once(dirfd, "stat", 4096)
        # After the name, which may hold spaces and parentheses: [0] state, [1] ppid, [6] flags,
        # [11] utime, [12] stime, [17] threads, [19] start time.
        name_end = stat.rindex(b")")
        f = stat[name_end + 2:].split(b" ", 20)
        start = int(f[19])
        if start >= since_ticks and not _still_member(dirfd, member):
            return None
        status = _read_once(dirfd, "status", 16384, whole=True)
        argv = b"" if int(f[6]) & _PF_KTHREAD else _read_once(dirfd, "cmdline", _ARGV_LIMIT)
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
        user=users.get(uid, ""), group=groups.get(gid, ""), cpu_percent=_percent(start, cpu, first, now))


def _percent(start: int, cpu: int, first: tuple[int, int, float] | None, now: float = 0.0) -> float:
    if first is not None and first[0] == start:
        elapsed = time.monotonic() - first[2]
        return round(100.0 * (cpu - first[1]) / CLK_TCK / elapsed, 1) if elapsed > 0 else 0.0
    alive = (now or time.clock_gettime(time.CLOCK_BOOTTIME)) - start / CLK_TCK
    return round(100.0 * cpu / CLK_TCK / alive, 1) if alive > 0 else 0.0


def _cpu_sample(member: Member, since_ticks: int) -> tuple[int, int, float] | None:
    """(start ticks, cpu ticks, monotonic time) of one process, for the first half of a CPU sample."""
    try:
        dirfd = _pid_dir(member.pid)
    except OSError:
        return None
    try:
        raw = _current(dirfd, member, since_ticks)
    finally:
        os.close(dirfd)
    if raw is None:
        return None
    f = raw[raw.rindex(b")") + 2:].split(b" ", 20)
    return int(f[19]), int(f[11]) + int(f[12]), time.monotonic()


# -- names from the container's own files ---------------------------------------------------------
class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_SYS_OPENAT2 = 437  # the same number on every architecture (added after the syscall table unification)
_RESOLVE_NO_MAGICLINKS, _RESOLVE_IN_ROOT = 0x02, 0x10
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _open_in_root(rootfd: int, path: str, flags: int) -> int:
    """openat2 with the path confined to rootfd; a plain O_NOFOLLOW walk (no symlinks at all) where
    the kernel lacks openat2 (< 5.6)."""
    how = _OpenHow(flags=flags, mode=0, resolve=_RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(rootfd), ctypes.c_char_p(path.encode()),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd >= 0:
        return int(fd)
    err = ctypes.get_errno()
    if err != errno.ENOSYS:
        raise OSError(err, os.strerror(err), path)
    parts = path.strip("/").split("/")
    dirfd = os.dup(rootfd)
    try:
        for part in parts[:-1]:
            nextfd = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            os.close(dirfd)
            dirfd = nextfd
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=dirfd)
    finally:
        os.close(dirfd)


def read_in_root(pid: int, start_ticks: int, path: str, limit: int = _NAMES_LIMIT) -> bytes | None:
    """A regular file below the root of process `pid` (if it is still the one that started at
    `start_ticks`), read without following anything out of that root and without touching atime;
    None when it is missing, not a regular file, too big, or reached only through a link out."""
    try:
        dirfd = os.open(str(pid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=procns.proc_fd())
    except OSError:
        return None
    fd = rootfd = -1
    try:
        if start_ticks and int(procns.stat_fields(procns.read_at(dirfd, "stat", 4096))[19]) != start_ticks:
            return None
        rootfd = os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dirfd)
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK  # a FIFO must not block us
        try:
            fd = _open_in_root(rootfd, path, flags | os.O_NOATIME)
        except PermissionError:
            fd = _open_in_root(rootfd, path, flags)  # O_NOATIME needs ownership or CAP_FOWNER
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit)
    except (OSError, ValueError, IndexError):
        return None
    finally:
        for opened in (fd, rootfd, dirfd):
            if opened >= 0:
                os.close(opened)


def parse_names(text: bytes | None) -> dict[int, str]:
    """passwd/group lines to id -> name; the first entry for an id wins, as getpwuid does."""
    names: dict[int, str] = {}
    for line in (text or b"").split(b"\n"):
        parts = line.split(b":")
        if len(parts) >= 3 and parts[2].isdigit() and parts[0] and parts[0][:1] not in (b"+", b"-", b"#"):
            names.setdefault(int(parts[2]), parts[0].decode(errors="replace"))
    return names


class _Names:
    """Per-request cache of (users, groups) by the process whose root they were read from: the
    container's init for its members, the process itself for outsiders."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, int], tuple[dict[int, str], dict[int, str]]] = {}

    def of(self, member: Member, start_ticks: int) -> tuple[dict[int, str], dict[int, str]]:
        key = (member.root_pid, member.root_start) if member.root_pid else (member.pid, start_ticks)
        if key not in self._seen:
            self._seen[key] = (parse_names(read_in_root(*key, "etc/passwd")),
                               parse_names(read_in_root(*key, "etc/group")))
        return self._seen[key]


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


def _outsider(j: Joined, pid_targets: Mapping[str, str], net_target: str) -> Member:
    joined: tuple[str, ...] = (f"pid:{pid_targets[j.pid_link]}",) if j.pid_link in pid_targets else ()
    joined += ("net",) if net_target and j.net_link == net_target else ()
    return Member(j.pid, outside=True, joined=joined, pid_ns=_ino(j.pid_link), net_ns=_ino(j.net_link))


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
        holders: dict[int, list[str]] = {}  # pid namespace inode -> who holds it, sandbox first
        holder_pids: dict[int, int] = {}  # pid namespace inode -> a process in it, to open it by
        net_ns = 0
        for name, _, pid, start in refs:
            if not pid:
                continue
            read = procns.read_namespaces(pid, start, types=("pid", "net"))
            if read.gone and not settle:
                return None
            if read.gone or "pid" not in read.ids:
                continue
            if not container or name in (container, "sandbox"):
                holders.setdefault(read.ids["pid"].ino, []).append(name)
                holder_pids.setdefault(read.ids["pid"].ino, pid)
            net_ns = net_ns or read.ids["net"].ino
        warnings = []
        host_pid, host_net = (host.ids["pid"].ino, host.ids["net"].ino) if not host.gone else (0, 0)
        if host_pid in holders:
            warnings.append("the pod shares the node's pid namespace (hostPID): only its containers' cgroups "
                            "are listed, not every process of the node")
        own = {c for c, *_ in refs}
        wanted = {container} if container else own
        pid_targets = {f"pid:[{ino}]": names[0] for ino, names in holders.items()
                       if ino != host_pid and (not container or container in names)}
        net_target = f"net:[{net_ns}]" if net_ns and net_ns != host_net and not container else ""
        members = self._cgroup_members(pod, {r[1]: r for r in refs if r[0] in wanted}, include_unknown=not container)
        targets_held = {ino: holder_pids[ino] for ino in holders if f"pid:[{ino}]" in pid_targets}
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
        first: dict[int, tuple[int, int, float]] = {}
        if cpu_sample > 0:
            first = {m.pid: s for m in found.members if (s := _cpu_sample(m, found.since_ticks))}
            time.sleep(cpu_sample)
        names, since, now = _Names(), found.since_ticks, time.clock_gettime(time.CLOCK_BOOTTIME)
        processes = [p for m in found.members if (p := read_facts(m, since, names, first.get(m.pid), now))]
        warnings = list(found.warnings)
        if found.pod.source is Source.PROC:
            warnings.insert(0, "the container runtime's CRI API is unreachable: answered from /proc")
        warnings += [f'container "{c.name}" is not running (state: {c.state}): no processes'
                     for c in found.pod.containers if c.state != "running" and (not container or c.name == container)]
        return ProcessList(found.pod, tuple(processes), cpu_sample, tuple(warnings))

