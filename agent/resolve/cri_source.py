"""Resolve a pod to its sandbox, containers and init PIDs through the runtime's CRI API.

The verbose status calls that carry PIDs cost milliseconds each, so their answers are cached by
container id. The cache is checked, never trusted: every resolve still lists the pod's sandboxes
and containers (new, exited and restarted containers show at once), and cached PIDs are handed
out with their start times so that readers refuse a process that is no longer the same one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nsinspect.proto import cri_pb2 as cri

from ..core.errors import NotFound
from ..core.model import ContainerInfo, NamespaceOptions, PodInfo, PodRef, SandboxInfo, Source
from ..procfs import procns
from .cri import CriClient
from .source import PodList

CONTAINER_STATES = {cri.CONTAINER_CREATED: "created", cri.CONTAINER_RUNNING: "running",
                    cri.CONTAINER_EXITED: "exited", cri.CONTAINER_UNKNOWN: "unknown"}
CACHE_SIZE = 4096


@dataclass(frozen=True)
class _Process:
    """What the verbose status told us about one sandbox or container, plus its start time."""

    pid: int
    start_time: int  # 0: the process was already gone, so it is never read (and never cached)
    options: NamespaceOptions | None
    hostname: str = ""
    privileged: bool = False


def mode_name(value: int) -> str:
    """CRI NamespaceMode number to its name ("POD", "CONTAINER", "NODE", "TARGET")."""
    try:
        return cri.NamespaceMode.Name(cri.NamespaceMode.ValueType(value))
    except ValueError:
        return f"MODE_{value}"


def _options_from_json(raw: Mapping[str, Any] | None) -> NamespaceOptions | None:
    """CRI NamespaceOption as JSON (verbose info); omitted enums are 0, which is POD."""
    if raw is None:
        return None
    return NamespaceOptions(network=mode_name(int(raw.get("network", 0))),
                            pid=mode_name(int(raw.get("pid", 0))),
                            ipc=mode_name(int(raw.get("ipc", 0))),
                            target_id=str(raw.get("target_id", "")))


def pod_labels(ref: PodRef) -> dict[str, str]:
    """The kubelet's labels that select a pod's sandboxes and containers."""
    labels = {}
    if ref.name:
        labels["io.kubernetes.pod.name"] = ref.name
        labels["io.kubernetes.pod.namespace"] = ref.namespace or "default"
    if ref.uid:
        labels["io.kubernetes.pod.uid"] = ref.uid
    return labels


class CriResolver:
    """The PodSource of the runtime's CRI API (source.py); safe to share between threads."""

    def __init__(self, client: CriClient) -> None:
        self.client = client
        self._cache: OrderedDict[str, _Process] = OrderedDict()
        self._sandboxes: OrderedDict[PodRef, cri.PodSandbox] = OrderedDict()
        self._lock = threading.Lock()
        self._runtime = ""

    def runtime_name(self) -> str:
        if not self._runtime:
            v = self.client.version()
            self._runtime = f"{v.runtime_name} {v.runtime_version}"
        return self._runtime

    def _remember(self, key: str, proc: _Process) -> _Process:
        if not proc.start_time:
            return proc
        with self._lock:
            self._cache[key] = proc
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return proc

    def _cached(self, key: str, fresh: bool) -> _Process | None:
        if fresh:
            return None
        with self._lock:
            return self._cache.get(key)

    def _sandbox_process(self, sandbox_id: str, fresh: bool) -> _Process:
        if (hit := self._cached(sandbox_id, fresh)) is not None:
            return hit
        status, info = self.client.sandbox_status(sandbox_id)
        pid = int(info.get("pid") or 0)
        options = status.linux.namespaces.options
        return self._remember(sandbox_id, _Process(
            pid=pid,
            start_time=_start_time(pid),
            options=NamespaceOptions(network=mode_name(options.network), pid=mode_name(options.pid),
                                     ipc=mode_name(options.ipc), target_id=options.target_id),
            hostname=str(info.get("config", {}).get("hostname", "")),
        ))

    def _container_process(self, container_id: str, fresh: bool) -> _Process:
        if (hit := self._cached(container_id, fresh)) is not None:
            return hit
        _, info = self.client.container_status(container_id)
        pid = int(info.get("pid") or 0)
        sec = info.get("config", {}).get("linux", {}).get("security_context", {})
        return self._remember(container_id, _Process(pid, _start_time(pid),
                                                     _options_from_json(sec.get("namespace_options")),
                                                     privileged=bool(sec.get("privileged", False))))

    def resolve(self, ref: PodRef, fresh: bool = False) -> PodInfo:
        """The pod as the runtime sees it now; `fresh` bypasses the caches.

        A cached ready sandbox is reused without listing sandboxes again, but only while its init
        process is still the one we saw (same start time): a stopped or replaced sandbox is relisted.
        """
        with self._lock:
            sb = None if fresh else self._sandboxes.get(ref)
        if sb is not None and not self._still_running(sb.id):
            sb = None
        if sb is None:
            sandboxes = self.client.list_sandboxes(pod_labels(ref))
            if not sandboxes:
                raise NotFound(f"pod {ref} not found on this node")
            # A restarted pod leaves old sandboxes behind: the ready one wins, then the newest.
            sb = max(sandboxes, key=lambda s: (s.state == cri.SANDBOX_READY, s.created_at))
            if sb.state == cri.SANDBOX_READY:
                with self._lock:
                    self._sandboxes[ref] = sb
                    while len(self._sandboxes) > CACHE_SIZE:
                        self._sandboxes.popitem(last=False)
        return self._pod(sb, self.client.list_containers(sandbox_id=sb.id), fresh)

    def _still_running(self, sandbox_id: str) -> bool:
        with self._lock:
            proc = self._cache.get(sandbox_id)
        return proc is not None and _start_time(proc.pid) == proc.start_time

    def _pod(self, sb: cri.PodSandbox, containers: list[cri.Container], fresh: bool) -> PodInfo:
        proc = self._sandbox_process(sb.id, fresh) if sb.state == cri.SANDBOX_READY else None
        sandbox = SandboxInfo(
            id=sb.id, state="ready" if proc else "notready",
            pid=proc.pid if proc else 0, start_time=proc.start_time if proc else 0,
            options=proc.options if proc else None, hostname=proc.hostname if proc else "",
        )
        return PodInfo(namespace=sb.metadata.namespace, name=sb.metadata.name, uid=sb.metadata.uid,
                       source=Source.CRI, sandbox=sandbox, containers=self._container_infos(containers, fresh),
                       runtime=self.runtime_name())

    def _container_infos(self, listed: list[cri.Container], fresh: bool) -> tuple[ContainerInfo, ...]:
        # A restarted container leaves its previous attempt behind: keep the running one, else the latest.
        latest: dict[str, cri.Container] = {}
        for c in listed:
            have = latest.get(c.metadata.name)
            if have is None or (c.state == cri.CONTAINER_RUNNING, c.metadata.attempt, c.created_at) > (
                    have.state == cri.CONTAINER_RUNNING, have.metadata.attempt, have.created_at):
                latest[c.metadata.name] = c
        result = []
        for c in sorted(latest.values(), key=lambda c: c.created_at):
            proc = self._container_process(c.id, fresh) if c.state == cri.CONTAINER_RUNNING else None
            result.append(ContainerInfo(
                name=c.metadata.name, id=c.id, state=CONTAINER_STATES.get(c.state, "unknown"),
                pid=proc.pid if proc else 0, image=c.image.image or c.image_ref,
                start_time=proc.start_time if proc else 0, options=proc.options if proc else None,
                created_at=c.created_at, privileged=proc.privileged if proc else False,
            ))
        return tuple(result)

    def list_pods(self) -> PodList:
        """Every ready pod on the node (for the node map), in two list calls."""
        by_sandbox: dict[str, list[cri.Container]] = {}
        for c in self.client.list_containers():
            by_sandbox.setdefault(c.pod_sandbox_id, []).append(c)
        return PodList([self._pod(sb, by_sandbox.get(sb.id, []), fresh=False)
                        for sb in self.client.list_sandboxes(ready_only=True)], from_cri=True)


def _start_time(pid: int) -> int:
    if pid <= 0:
        return 0
    try:
        return procns.start_time(pid)
    except ProcessLookupError:
        return 0
