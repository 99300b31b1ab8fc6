"""A pod's processes as values: who belongs to the pod and why (Member), what one discovery found
(Discovery), one process's facts (ProcessFacts) and a whole listing (ProcessList).

Filled by observe/ (discovery, facts), read by the server's wire mapping; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import PodInfo
from .nsid import NamespaceId


@dataclass(frozen=True)
class Member:
    """A discovered process and why it belongs to the pod."""

    pid: int
    container: str = ""  # name; empty for the sandbox, outsiders and containers the runtime did not name
    container_id: str = ""
    sandbox: bool = False
    outside: bool = False  # in no container of the pod: found through its namespaces
    joined: tuple[str, ...] = ()  # outsiders: "pid:<holder>", "net"
    pid_ns: NamespaceId | None = None  # read for outsiders only: what they joined, checked again later
    net_ns: NamespaceId | None = None
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
    start_time: float = 0.0  # seconds since the epoch: the boot time (psutil's) + start_ticks

    @property
    def pid_in_pod(self) -> int:
        """The last NSpid entry when the process is in one of the pod's pid namespaces, else 0."""
        m = self.member
        return self.nspid[-1] if self.nspid and (not m.outside or any(j.startswith("pid:") for j in m.joined)) else 0


@dataclass(frozen=True)
class ProcessList:
    pod: PodInfo
    processes: tuple[ProcessFacts, ...]
    cpu_sample: float  # seconds; 0 means lifetime averages
    warnings: tuple[str, ...]
