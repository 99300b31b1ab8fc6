"""The agent's model: plain immutable values, filled by resolvers and readers, read by everyone.

Nothing here does I/O. Namespace types are the kernel's names; modes are CRI's NamespaceMode names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from .nsid import NamespaceId

NS_TYPES = ("mnt", "pid", "net", "ipc", "uts", "cgroup", "user", "time")
FOR_CHILDREN = {"pid": "pid_for_children", "time": "time_for_children"}


class Source(Enum):
    CRI = "cri"
    PROC = "proc"


@dataclass(frozen=True)
class PodRef:
    """A pod by namespace and name, or by UID; resolvers accept either and check both when given."""

    namespace: str = ""
    name: str = ""
    uid: str = ""

    def __str__(self) -> str:
        if self.name:
            return f"{self.namespace}/{self.name}"
        return f"uid {self.uid}" + (f" in namespace {self.namespace}" if self.namespace else "")


@dataclass(frozen=True)
class ProcessNamespaces:
    """What one read of /proc/PID/ns gave; `gone` when the process exited or its PID was reused."""

    pid: int
    start_time: int = 0
    ids: Mapping[str, NamespaceId] = field(default_factory=dict)
    for_children: Mapping[str, NamespaceId] = field(default_factory=dict)
    gone: bool = False
    error: str = ""


@dataclass(frozen=True)
class PodNamespaces:
    """One read of everything a pod's verdicts depend on: the host, the sandbox, each container."""

    host: ProcessNamespaces
    sandbox: ProcessNamespaces | None
    containers: Mapping[str, ProcessNamespaces]

    def holder(self, name: str) -> ProcessNamespaces | None:
        """"host", "sandbox" or "container:NAME" to its read, if there is one."""
        if name == "host":
            return self.host
        if name == "sandbox":
            return self.sandbox
        return self.containers.get(name.removeprefix("container:"))


@dataclass(frozen=True)
class NamespaceOptions:
    """CRI NamespaceOption: network, pid and ipc modes, and the pid target's container id."""

    network: str = "POD"
    pid: str = "CONTAINER"
    ipc: str = "POD"
    target_id: str = ""


@dataclass(frozen=True)
class SandboxInfo:
    id: str
    state: str  # "ready" | "notready"
    pid: int
    start_time: int = 0
    options: NamespaceOptions | None = None
    hostname: str = ""


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    id: str
    state: str  # "running" | "created" | "exited" | "unknown"
    pid: int
    image: str = ""
    start_time: int = 0
    options: NamespaceOptions | None = None
    created_at: int = 0
    privileged: bool = False  # privileged containers keep the host's cgroup namespace


@dataclass(frozen=True)
class PodInfo:
    """A pod as one node's runtime (or its /proc) sees it."""

    namespace: str
    name: str
    uid: str
    source: Source
    sandbox: SandboxInfo | None
    containers: tuple[ContainerInfo, ...]
    runtime: str = ""

    def container(self, name: str) -> ContainerInfo | None:
        return next((c for c in self.containers if c.name == name), None)


@dataclass(frozen=True)
class PodFacts:
    """What the pod spec says about sharing; None means "take the runtime's word for it"."""

    host_network: bool | None = None
    host_pid: bool | None = None
    host_ipc: bool | None = None
    share_process_namespace: bool | None = None
    host_users: bool | None = None
    target_container_name: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HostInfo:
    namespaces: ProcessNamespaces
    cgroup_mode: str  # "v1" | "hybrid" | "v2"


@dataclass(frozen=True)
class Sharing:
    """One cell of the comparison matrix: who else holds this container's namespace of `type`."""

    type: str
    host: bool = False
    sandbox: bool = False
    containers: tuple[str, ...] = ()
    unknown: bool = False

    @property
    def private(self) -> bool:
        return not (self.unknown or self.host or self.sandbox or self.containers)


class Verdict(Enum):
    OK = "ok"
    MISMATCH = "mismatch"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Check:
    """Expected against actual for one namespace; holders are "host", "sandbox", "own", "container:NAME"."""

    type: str
    expected: str
    actual: str
    verdict: Verdict
    explanation: str


@dataclass(frozen=True)
class ContainerVerification:
    container: str
    checks: tuple[Check, ...]

    @property
    def verdict(self) -> Verdict:
        """A container with no check at all (nothing was readable) is UNKNOWN, never OK."""
        return worst(c.verdict for c in self.checks) if self.checks else Verdict.UNKNOWN


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """MISMATCH beats UNKNOWN beats OK; callers decide what an empty set means."""
    seen = set(verdicts)
    for v in (Verdict.MISMATCH, Verdict.UNKNOWN):
        if v in seen:
            return v
    return Verdict.OK


@dataclass(frozen=True)
class Owner:
    kind: str  # "host" | "pod" | "unknown"
    pod_namespace: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    container: str = ""  # empty for the sandbox
    sandbox: bool = False


@dataclass(frozen=True)
class NodeNamespace:
    """One row of the node map, as lsns would print it, plus who owns the namespace."""

    id: NamespaceId
    processes: int
    lowest_pid: int
    command: str
    owners: tuple[Owner, ...] = ()
