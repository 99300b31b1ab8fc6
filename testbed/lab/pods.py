"""Pods and containers on a lab containerd, created through CRI the way the kubelet creates them.

`Lab` is the API tests use: any namespace options, uid and command, a seccomp profile, memory and
OOM settings per container and a pids limit per pod; pods made with `lab.pod()` are removed on exit
even when the test fails. The canonical pods of `hack/lab pods` live here too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from nsinspect.agent.resolve.cri import CriClient
from nsinspect.proto import cri_pb2 as cri
from testbed.lab import cgroups
from testbed.lab.config import LabConfig
from testbed.lab.images import TOOLS

SLEEP = ("/bin/sleep", "2147483647")
MODES = {"POD": cri.POD, "CONTAINER": cri.CONTAINER, "NODE": cri.NODE, "TARGET": cri.TARGET}
# "": no profile at all, which containerd 1.6 runs unconfined (the lab's default, as before).
# As the kubelet sends them (pkg/securitycontext, procMount Default).
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
SECCOMP = {"RuntimeDefault": cri.SecurityProfile.RuntimeDefault, "Unconfined": cri.SecurityProfile.Unconfined}


class LabError(Exception):
    """A lab request that cannot be carried out as asked."""


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str = TOOLS.name
    command: tuple[str, ...] = SLEEP
    uid: int | None = None
    gid: int | None = None
    # None: what the kubelet derives from the pod (CONTAINER, or POD/NODE for shared/host pid).
    pid: str | None = None
    target: str | None = None  # container name in the same pod, for pid TARGET
    target_id: str | None = None  # raw runtime id, to ask for targets that do not exist
    env: tuple[tuple[str, str], ...] = ()
    privileged: bool = False
    stdin: bool = False  # keep stdin open (a shell then waits for input instead of exiting)
    seccomp: str = ""  # "", "RuntimeDefault" or "Unconfined"
    memory_limit: int = 0  # bytes (LinuxContainerResources.memory_limit_in_bytes); 0: none
    oom_score_adj: int | None = None  # None: not sent (the container inherits the shim's score)
    capabilities: tuple[str, ...] = ()  # added to the runtime's default set (securityContext.capabilities.add)


@dataclass(frozen=True)
class PodSpec:
    name: str
    containers: tuple[ContainerSpec, ...] = ()
    namespace: str = "default"
    uid: str = ""  # derived from namespace/name when empty
    network: str = "POD"  # POD or NODE (hostNetwork)
    pid: str = "CONTAINER"  # CONTAINER, POD (shareProcessNamespace) or NODE (hostPID)
    ipc: str = "POD"  # POD or NODE (hostIPC)
    pids_limit: int | None = None  # the pod cgroup's pids.max, written by the lab as the kubelet does

    @property
    def pod_uid(self) -> str:
        return self.uid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"nsinspect-lab/{self.namespace}/{self.name}"))


@dataclass(frozen=True)
class LabContainer:
    name: str
    id: str
    pid: int


@dataclass(frozen=True)
class LabPod:
    spec: PodSpec
    sandbox_id: str
    sandbox_pid: int
    containers: dict[str, LabContainer] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def uid(self) -> str:
        return self.spec.pod_uid

    def __getitem__(self, name: str) -> LabContainer:
        return self.containers[name]


CANONICAL = (
    PodSpec("plain", (ContainerSpec("app"), ContainerSpec("sidecar"))),
    PodSpec("shared", (ContainerSpec("app"), ContainerSpec("sidecar")), pid="POD"),
    PodSpec("targeted", (ContainerSpec("app"), ContainerSpec("debugger", pid="TARGET", target="app"))),
    PodSpec("hostnet", (ContainerSpec("app"),), network="NODE"),
    PodSpec("hostpid", (ContainerSpec("app"),), pid="NODE"),
    PodSpec("nonroot", (ContainerSpec("app", uid=1000, gid=1000),)),
)


def sandbox_config(cfg: LabConfig, spec: PodSpec) -> cri.PodSandboxConfig:
    uid = spec.pod_uid
    labels = {"io.kubernetes.pod.name": spec.name, "io.kubernetes.pod.namespace": spec.namespace,
              "io.kubernetes.pod.uid": uid}
    ns = cri.NamespaceOption(network=MODES[spec.network], pid=MODES[spec.pid], ipc=MODES[spec.ipc])
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=spec.name, uid=uid, namespace=spec.namespace, attempt=0),
        # Like the kubelet: a host-network pod keeps the node's hostname (and its UTS namespace).
        hostname="" if spec.network == "NODE" else spec.name,
        labels=labels,
        annotations={"nsinspect.lab/instance": cfg.name},
        linux=cri.LinuxPodSandboxConfig(
            cgroup_parent=cgroups.pod_parent(cfg, uid),
            security_context=cri.LinuxSandboxSecurityContext(namespace_options=ns),
        ),
    )


def _resources(cspec: ContainerSpec) -> cri.LinuxContainerResources | None:
    if not cspec.memory_limit and cspec.oom_score_adj is None:
        return None
    return cri.LinuxContainerResources(memory_limit_in_bytes=cspec.memory_limit, oom_score_adj=cspec.oom_score_adj or 0)


class Lab:
    """A CRI session against one lab instance."""

    def __init__(self, cfg: LabConfig | None = None) -> None:
        self.cfg = cfg or LabConfig()
        self.cri = CriClient(self.cfg.endpoint, timeout=30.0)

    def close(self) -> None:
        self.cri.close()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object | type[BaseException] | TracebackType | None) -> None:
        self.close()

    # -- creation -------------------------------------------------------------------------
    def create_pod(self, spec: PodSpec) -> LabPod:
        """Run the sandbox, then create and start each container in order (targets first). A pids limit
        is written to the pod's cgroup, made here before the sandbox as the kubelet makes it."""
        config = sandbox_config(self.cfg, spec)
        if spec.pids_limit is not None:
            cgroups.make_pids_limited(config.linux.cgroup_parent, spec.pids_limit)
        try:
            sandbox_id = self.cri.runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=config),
                                                        timeout=self.cri.timeout).pod_sandbox_id
        except BaseException:
            self._remove_pod_cgroups(spec)
            raise
        pod = LabPod(spec, sandbox_id, self._sandbox_pid(sandbox_id))
        try:
            for cspec in spec.containers:
                pod = self.add_container(pod, cspec)
        except BaseException:
            self.remove_pod(pod)
            raise
        return pod

    def add_container(self, pod: LabPod, cspec: ContainerSpec) -> LabPod:
        """Create and start one more container in a running pod (e.g. an ephemeral-like debugger)."""
        spec = pod.spec
        pid_mode = cspec.pid or spec.pid
        target_id = cspec.target_id or ""
        if cspec.target is not None:
            if cspec.target not in pod.containers:
                raise LabError(f"pod {spec.name} has no container {cspec.target!r} to target")
            target_id = pod.containers[cspec.target].id
        if pid_mode == "TARGET" and not target_id:
            raise LabError("pid mode TARGET needs a target container")
        ns = cri.NamespaceOption(network=MODES[spec.network], pid=MODES[pid_mode], ipc=MODES[spec.ipc],
                                 target_id=target_id)
        sec = cri.LinuxContainerSecurityContext(namespace_options=ns, privileged=cspec.privileged)
        sec.capabilities.add_capabilities.extend(cspec.capabilities)
        if not cspec.privileged:  # the kubelet's DefaultProcMount: the runtime masks nothing by itself
            sec.masked_paths.extend(MASKED_PATHS)
            sec.readonly_paths.extend(READONLY_PATHS)
        if cspec.seccomp:
            if cspec.seccomp not in SECCOMP:
                raise LabError(f"unknown seccomp profile {cspec.seccomp!r} (use {', '.join(SECCOMP)})")
            sec.seccomp.profile_type = SECCOMP[cspec.seccomp]
        if cspec.uid is not None:
            sec.run_as_user.value = cspec.uid
        if cspec.gid is not None:
            sec.run_as_group.value = cspec.gid
        labels = {"io.kubernetes.container.name": cspec.name, "io.kubernetes.pod.name": spec.name,
                  "io.kubernetes.pod.namespace": spec.namespace, "io.kubernetes.pod.uid": spec.pod_uid}
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=cspec.name, attempt=0),
            image=cri.ImageSpec(image=cspec.image),
            command=list(cspec.command),
            envs=[cri.KeyValue(key=k, value=v) for k, v in cspec.env],
            labels=labels,
            stdin=cspec.stdin,
            linux=cri.LinuxContainerConfig(security_context=sec, resources=_resources(cspec)),
        )
        req = cri.CreateContainerRequest(pod_sandbox_id=pod.sandbox_id, config=config,
                                         sandbox_config=sandbox_config(self.cfg, spec))
        cid = self.cri.runtime.CreateContainer(req, timeout=self.cri.timeout).container_id
        self.cri.runtime.StartContainer(cri.StartContainerRequest(container_id=cid), timeout=self.cri.timeout)
        containers = {**pod.containers, cspec.name: LabContainer(cspec.name, cid, self._container_pid(cid))}
        return LabPod(spec, pod.sandbox_id, pod.sandbox_pid, containers)

    def _sandbox_pid(self, sandbox_id: str) -> int:
        return int(self.cri.sandbox_status(sandbox_id)[1].get("pid", 0))

    def _container_pid(self, container_id: str) -> int:
        return int(self.cri.container_status(container_id)[1].get("pid", 0))

    # -- removal --------------------------------------------------------------------------
    def remove_pod(self, pod: LabPod | str) -> None:
        """Stop and remove the sandbox; a pod with a pids limit (whose cgroup the lab made) also loses its pod
        cgroup on every hierarchy."""
        sandbox_id = pod.sandbox_id if isinstance(pod, LabPod) else pod
        self.cri.runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=self.cri.timeout)
        self.cri.runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id),
                                          timeout=self.cri.timeout)
        if isinstance(pod, LabPod):
            self._remove_pod_cgroups(pod.spec)

    def _remove_pod_cgroups(self, spec: PodSpec) -> None:
        if spec.pids_limit is not None:
            for top in cgroups.everywhere(cgroups.pod_parent(self.cfg, spec.pod_uid)):
                cgroups.remove_tree(top, patience=5.0)

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        self.cri.runtime.StopContainer(cri.StopContainerRequest(container_id=container_id, timeout=timeout),
                                       timeout=self.cri.timeout)

    def remove_all_pods(self) -> int:
        sandboxes = self.cri.list_sandboxes()
        for sb in sandboxes:
            self.remove_pod(sb.id)
        return len(sandboxes)

    @contextmanager
    def pod(self, spec: PodSpec) -> Iterator[LabPod]:
        """A pod for the length of a with-block; removed afterwards whatever happened."""
        created = self.create_pod(spec)
        try:
            yield created
        finally:
            self.remove_pod(created)

    # -- reading --------------------------------------------------------------------------
    def pod_cgroup(self, pod: LabPod, controller: str = "pids") -> Path:
        """The pod's cgroup directory on the hierarchy with `controller` (the kubelet's pod cgroup)."""
        return cgroups.directory(controller, cgroups.pod_parent(self.cfg, pod.uid))

    def container_cgroup(self, pod: LabPod, container: str, controller: str) -> Path:
        return self.pod_cgroup(pod, controller) / pod[container].id

    def pod_processes(self, pod: LabPod) -> set[int]:
        """Every process in the pod's cgroup tree (sandbox and containers), read from the node."""
        return cgroups.processes(self.pod_cgroup(pod))

    def exec(self, container_id: str, *cmd: str, timeout: int = 10) -> cri.ExecSyncResponse:
        return self.cri.runtime.ExecSync(cri.ExecSyncRequest(container_id=container_id, cmd=list(cmd),
                                                             timeout=timeout), timeout=timeout + 5)

    def pods(self) -> list[LabPod]:
        """Every pod of this lab as the runtime reports it now (status for `hack/lab status`)."""
        found = []
        for sb in sorted(self.cri.list_sandboxes(), key=lambda s: (s.metadata.namespace, s.metadata.name)):
            spec = PodSpec(sb.metadata.name, namespace=sb.metadata.namespace, uid=sb.metadata.uid)
            containers = {}
            for c in sorted(self.cri.list_containers(sandbox_id=sb.id), key=lambda c: c.created_at):
                pid = self._container_pid(c.id) if c.state == cri.CONTAINER_RUNNING else 0
                containers[c.metadata.name] = LabContainer(c.metadata.name, c.id, pid)
            pid = self._sandbox_pid(sb.id) if sb.state == cri.SANDBOX_READY else 0
            found.append(LabPod(spec, sb.id, pid, containers))
        return found

    def ensure_canonical(self, say: Callable[[str], None]) -> None:
        """Create each canonical pod unless it already runs whole."""
        running = {(p.spec.namespace, p.name): p for p in self.pods()}
        for spec in CANONICAL:
            have = running.get((spec.namespace, spec.name))
            if have and have.sandbox_pid and all(
                    c.name in have.containers and have.containers[c.name].pid for c in spec.containers):
                say(f"pod {spec.namespace}/{spec.name}: already running")
                continue
            if have:
                self.remove_pod(have)
            started = time.monotonic()
            self.create_pod(spec)
            say(f"pod {spec.namespace}/{spec.name}: created in {(time.monotonic() - started) * 1000:.0f} ms")
