"""Inspect one pod: resolve it, read every namespace once, then compare and verify.

Reads use the start times the resolver reported, so a PID that changed hands is never read as
the container's. If a read finds a process gone, the pod is resolved again without the cache
and read once more before anything is reported as gone.
"""

from __future__ import annotations

from dataclasses import dataclass

from nsinspect.agent import procns
from nsinspect.agent.compare import compare
from nsinspect.agent.errors import NotFound, NotRunning
from nsinspect.agent.model import (
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
from nsinspect.agent.resolver import Resolver
from nsinspect.agent.verify import verify


@dataclass(frozen=True)
class Inspection:
    pod: PodInfo
    host: HostInfo
    reads: PodNamespaces
    comparison: dict[str, tuple[Sharing, ...]]
    verification: list[ContainerVerification]
    warnings: tuple[str, ...]

    @property
    def verdict(self) -> Verdict:
        return worst(v.verdict for v in self.verification)


def read_pod(pod: PodInfo, only: str = "") -> PodNamespaces:
    sandbox = None
    if pod.sandbox is not None and pod.sandbox.pid:
        sandbox = procns.read_namespaces(pod.sandbox.pid, pod.sandbox.start_time)
    containers = {c.name: procns.read_namespaces(c.pid, c.start_time)
                  for c in pod.containers if c.state == "running" and c.pid and (not only or c.name == only)}
    return PodNamespaces(procns.read_host().namespaces, sandbox, containers)


def _any_gone(reads: PodNamespaces) -> bool:
    procs: list[ProcessNamespaces] = [*reads.containers.values(), *([reads.sandbox] if reads.sandbox else [])]
    return any(p.gone for p in procs)


class Inspector:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    def _resolve(self, ref: PodRef, container: str) -> PodInfo:
        pod = self.resolver.resolve(ref)
        if container and pod.container(container) is None:
            pod = self.resolver.resolve(ref, fresh=True)  # added since we cached it?
        if container:
            found = pod.container(container)
            if found is None:
                raise NotFound(f'container "{container}" not found in pod {pod.namespace}/{pod.name}')
            if found.state != "running":
                raise NotRunning(f'container "{container}" of pod {pod.namespace}/{pod.name} is not running '
                                 f"(state: {found.state})")
        elif pod.sandbox is None or pod.sandbox.state != "ready":
            raise NotRunning(f"pod {pod.namespace}/{pod.name} has no running sandbox")
        return pod

    def inspect(self, ref: PodRef, container: str = "", facts: PodFacts | None = None) -> Inspection:
        pod = self._resolve(ref, container)
        reads = read_pod(pod, container)
        if _any_gone(reads):
            pod = self.resolver.resolve(ref, fresh=True)
            reads = read_pod(pod, container)
        warnings = []
        if pod.source is Source.PROC:
            warnings.append("the container runtime's CRI API is unreachable: answered from /proc")
        for name, proc in reads.containers.items():
            if proc.gone:
                warnings.append(f'container "{name}": {proc.error}')
        if reads.sandbox is not None and reads.sandbox.gone:
            warnings.append(f"pod sandbox: {reads.sandbox.error}")
        host = HostInfo(reads.host, procns.cgroup_mode())
        return Inspection(
            pod=pod, host=host, reads=reads,
            comparison=compare(reads, container),
            verification=verify(pod, facts or PodFacts(), host.cgroup_mode, reads, container),
            warnings=tuple(warnings),
        )
