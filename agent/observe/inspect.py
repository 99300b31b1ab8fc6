"""Inspect one pod: resolve it, read every namespace once, then compare and verify.

Every running container is read even when the caller asks about one, because a container's
verdict depends on the others (its target, whoever targets it). Reads use the start times the
resolver reported, so a PID that changed hands is never read as the container's; a read that
finds a process gone makes the pod be resolved again, without caches, and read once more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..core.errors import InvalidArgument
from ..core.model import (
    ContainerVerification,
    HostInfo,
    PodFacts,
    PodInfo,
    PodNamespaces,
    PodRef,
    ProcessNamespaces,
    Sharing,
    Source,
    Verdict,
    worst,
)
from ..procfs import procns
from ..resolve.fallback import Resolver
from .compare import compare
from .verify import verify


@dataclass(frozen=True)
class Inspection:
    pod: PodInfo
    host: HostInfo
    reads: PodNamespaces
    comparison: Mapping[str, tuple[Sharing, ...]]
    verification: tuple[ContainerVerification, ...]
    warnings: tuple[str, ...]

    @property
    def verdict(self) -> Verdict:
        """Nothing verified is not "ok": no running container, or nothing readable, is UNKNOWN."""
        return worst(v.verdict for v in self.verification) if self.verification else Verdict.UNKNOWN


def read_process(pid: int, start_time: int) -> ProcessNamespaces:
    """Only a process we can pin down by its start time is read; anything else is gone."""
    if pid <= 0 or start_time <= 0:
        return ProcessNamespaces(pid=pid, gone=True, error="process exited")
    return procns.read_namespaces(pid, start_time)


def read_pod(pod: PodInfo) -> PodNamespaces:
    sandbox = None
    if pod.sandbox is not None and pod.sandbox.state == "ready":
        sandbox = read_process(pod.sandbox.pid, pod.sandbox.start_time)
    containers = {c.name: read_process(c.pid, c.start_time) for c in pod.containers if c.state == "running"}
    return PodNamespaces(procns.read_host().namespaces, sandbox, containers)


def _any_gone(reads: PodNamespaces) -> bool:
    procs = [*reads.containers.values(), *([reads.sandbox] if reads.sandbox else [])]
    return any(p.gone for p in procs)


def _check_targets(pod: PodInfo, facts: PodFacts) -> None:
    names = {c.name for c in pod.containers}
    for container, target in facts.target_container_name.items():
        if target not in names:
            raise InvalidArgument(f'targetContainerName "{target}" of "{container}" is not a container of '
                                  f"pod {pod.namespace}/{pod.name}")


class Inspector:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    def inspect(self, ref: PodRef, container: str = "", facts: PodFacts | None = None) -> Inspection:
        facts = facts or PodFacts()
        pod = self.resolver.running(ref, container)
        _check_targets(pod, facts)
        reads = read_pod(pod)
        if _any_gone(reads):
            pod = self.resolver.running(ref, container, fresh=True)
            reads = read_pod(pod)
        warnings = []
        if pod.source is Source.PROC:
            warnings.append("the container runtime's CRI API is unreachable: answered from /proc")
        for name, proc in reads.containers.items():
            if proc.gone or proc.error:
                warnings.append(f'container "{name}": {proc.error}')
        if reads.sandbox is not None and (reads.sandbox.gone or reads.sandbox.error):
            warnings.append(f"pod sandbox: {reads.sandbox.error}")
        if reads.host.gone or reads.host.error or not reads.host.ids:
            warnings.append(f"the host's namespaces cannot be read: {reads.host.error or 'no namespaces'}")
        if not reads.containers:
            warnings.append("no running container to verify")
        host = HostInfo(reads.host, procns.cgroup_mode())
        return Inspection(
            pod=pod, host=host, reads=reads,
            comparison=compare(reads, container),
            verification=tuple(verify(pod, facts, host.cgroup_mode, reads, container)),
            warnings=tuple(warnings),
        )
