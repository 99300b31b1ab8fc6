"""The node the benchmarks run on, and an agent serving it.

- `lab_node`: a generated busy node: thousands of idle processes and dozens of lab pods (in a
  namespace of their own, always removed afterwards), a pod with many processes for ListProcesses
  and one for Exec;
- `real_node`: a real node's own runtime and one of its existing pods, without any generated load
  (nothing is created but the agent's unix socket in a temporary directory).

Either way the benchmarks get a `Target`: the runtime endpoint, the pods to measure, and the address
of an agent started for the run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from nsinspect.agent.core.model import PodRef
from nsinspect.agent.observe.processes import ProcessLister
from nsinspect.agent.resolve.cri import CriClient
from nsinspect.agent.resolve.cri_source import CriResolver
from nsinspect.agent.resolve.fallback import Resolver
from nsinspect.agent.resolve.proc_source import DEFAULT_STATE_DIRS, ProcResolver
from testbed import toolbox
from testbed.agentproc import stop, wait_healthy
from testbed.lab import runtime
from testbed.lab.config import LabConfig
from testbed.lab.pods import ContainerSpec, Lab, LabPod, PodSpec

# Forks `count` children that sleep until killed; all share one session, so one killpg ends them.
_FORKER = """
import os, signal, sys
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:
        signal.pause()
        os._exit(0)
print("ready", flush=True)
signal.pause()
"""


@dataclass(frozen=True)
class Sizes:
    """How big the generated node is and how many times each figure is measured."""

    processes: int = 3000  # extra idle processes
    pods: int = 50  # extra lab pods, 2 containers each
    pod_processes: int = 1000  # processes of the ListProcesses pod
    runs: int = 500  # calls per Inspect figure
    ps_runs: int = 15  # calls per ListProcesses figure
    exec_runs: int = 200  # sessions per exec latency figure
    mib: int = 1024  # MiB per throughput run
    cli_runs: int = 20  # starts per CLI figure


@dataclass
class Target:
    """What the benchmarks measure against."""

    endpoint: str
    state_dirs: tuple[Path, ...]
    inspect_pod: PodRef
    ps_pod: PodRef
    exec_pod: PodRef
    exec_container: str
    exec_pid: int  # that container's init, for nsenter
    agent: str  # an agent started for this run: unix socket, fork-server exec helper
    tmp: Path
    lab: bool  # False: a real node; rows that need the lab are skipped
    node_name: str
    toolbox: Path | None = None
    memo: dict[str, float] = field(default_factory=dict)

    def once(self, key: str, measure: Callable[[], float]) -> float:
        """A baseline measured once per run and shared by the rows that compare against it."""
        if key not in self.memo:
            self.memo[key] = measure()
        return self.memo[key]

    def resolver(self) -> tuple[CriClient, Resolver]:
        client = CriClient(self.endpoint)
        return client, Resolver(CriResolver(client), ProcResolver(list(self.state_dirs)))

    def serve(self, sock: Path, *extra: str) -> AbstractContextManager[str]:
        """One more agent on this node (e.g. with other flags)."""
        return serving(self.endpoint, self.state_dirs, sock, self.node_name, *extra)


@contextmanager
def serving(endpoint: str, state_dirs: tuple[Path, ...], sock: Path, node_name: str, *extra: str) -> Iterator[str]:
    """The real `nsinspect-agent` on `sock` for the length of a with-block; yields its address."""
    address = f"unix://{sock}"
    argv = [sys.executable, "-m", "nsinspect.agent.main", "--listen", address, "--cri-endpoint", endpoint,
            "--node-name", node_name, *(a for d in state_dirs for a in ("--runtime-state-dir", str(d))), *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(address, proc)
        yield address
    finally:
        stop(proc)


@contextmanager
def extra_processes(count: int) -> Iterator[int]:
    if count <= 0:
        yield 0
        return
    proc = subprocess.Popen([sys.executable, "-c", _FORKER, str(count)], stdout=subprocess.PIPE,
                            start_new_session=True, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield count
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.2)  # let init reap the orphans


@contextmanager
def extra_pods(lab: Lab, count: int, namespace: str = "bench") -> Iterator[list[LabPod]]:
    pods: list[LabPod] = []
    try:
        for i in range(count):
            spec = PodSpec(f"bench-{i:03d}", (ContainerSpec("app"), ContainerSpec("sidecar")), namespace=namespace)
            pods.append(lab.create_pod(spec))
        yield pods
    finally:
        for pod in pods:
            lab.remove_pod(pod)


@contextmanager
def busy_pod(lab: Lab, lister: ProcessLister, ref: PodRef, count: int) -> Iterator[LabPod]:
    """A pod whose one container forks `count` sleeps; yields once the lister sees them all."""
    forker = f"for i in $(seq {count}); do sleep 2147483647 </dev/null >/dev/null 2>&1 & done; exec sleep 2147483647"
    with lab.pod(PodSpec(ref.name, (ContainerSpec("app", command=("sh", "-c", forker)),),
                         namespace=ref.namespace)) as pod:
        deadline = time.monotonic() + 120
        while len(lister.discover(ref).members) < count + 2:  # the sleeps, the container's init, the sandbox
            if time.monotonic() > deadline:
                raise RuntimeError(f"the pod did not reach {count} processes")
            time.sleep(0.2)
        yield pod


def process_count() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def lab_node(sizes: Sizes, busy: bool = True) -> Iterator[Target]:
    """The main lab (brought up if needed) made busy; `busy` False: no many-process pod."""
    cfg = LabConfig()
    runtime.up(cfg)
    namespace = f"bench-{os.getpid()}"  # generated pods never meet another run's
    box = toolbox.build(toolbox.default_dir(cfg))
    with ExitStack() as stack:
        lab = stack.enter_context(Lab(cfg))
        lab.ensure_canonical(lambda _: None)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nsinspect-bench-")))
        say(f"node: generating {sizes.pods} pods and {sizes.processes} processes ...")
        stack.enter_context(extra_pods(lab, sizes.pods, namespace))
        stack.enter_context(extra_processes(sizes.processes))
        exec_pod = stack.enter_context(lab.pod(PodSpec("bench-exec", (ContainerSpec("app"),), namespace=namespace)))
        ps_pod = PodRef("default", "targeted")
        if busy:
            ps_pod = PodRef(namespace, "bench-ps")
            client = stack.enter_context(CriClient(cfg.endpoint))
            lister = ProcessLister(Resolver(CriResolver(client), ProcResolver([cfg.state])))
            say(f"node: a pod with {sizes.pod_processes} processes ...")
            stack.enter_context(busy_pod(lab, lister, ps_pod, sizes.pod_processes))
        agent = stack.enter_context(serving(cfg.endpoint, (cfg.state,), tmp / "agent.sock", "lab-node",
                                            "--toolbox", str(box), "--audit-log", str(tmp / "agent.audit")))
        yield Target(cfg.endpoint, (cfg.state,), PodRef("default", "targeted"), ps_pod,
                     PodRef(namespace, "bench-exec"), "app", exec_pod["app"].pid, agent, tmp, True, "lab-node", box)


@contextmanager
def real_node(endpoint: str, pod: PodRef, container: str = "",
              state_dirs: tuple[Path, ...] = tuple(DEFAULT_STATE_DIRS)) -> Iterator[Target]:
    """A real node: its runtime at `endpoint` and its pod `pod` (`container`: the one exec enters;
    default its first running container). Nothing is generated."""
    with CriClient(endpoint) as client:
        found = Resolver(CriResolver(client), ProcResolver(list(state_dirs))).running(pod, container)
    running = sorted((c for c in found.containers if c.state == "running"), key=lambda c: c.created_at)
    chosen = next((c for c in running if c.name == container), None) if container else \
        (running[0] if running else None)
    if chosen is None:
        raise RuntimeError(f"pod {pod.namespace}/{pod.name} has no running container {container!r}")
    node_name = socket.gethostname()
    with tempfile.TemporaryDirectory(prefix="nsinspect-bench-") as tmp, \
            serving(endpoint, state_dirs, Path(tmp) / "agent.sock", node_name,
                    "--audit-log", str(Path(tmp) / "agent.audit")) as agent:
        yield Target(endpoint, state_dirs, pod, pod, pod, chosen.name, chosen.pid, agent, Path(tmp), False, node_name)
