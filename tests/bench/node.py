"""A busy node for benchmarks: thousands of idle processes and dozens of lab pods, always cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.lab.pods import ContainerSpec, Lab, LabPod, PodSpec

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
def extra_pods(lab: Lab, count: int) -> Iterator[list[LabPod]]:
    pods: list[LabPod] = []
    try:
        for i in range(count):
            spec = PodSpec(f"bench-{i:03d}", (ContainerSpec("app"), ContainerSpec("sidecar")), namespace="bench")
            pods.append(lab.create_pod(spec))
        yield pods
    finally:
        for pod in pods:
            lab.remove_pod(pod)


def process_count() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())
