"""`.venv/bin/python -m tests.bench.ps [--processes N] [--pod-processes N] [--runs N]`: ListProcesses on
a busy node against a full psutil walk of the node, in one run, with the ratio.

The node gets N extra idle processes (default 3,000) and a lab pod whose container forks 1,000
sleeps. "Ours" is the agent's own function, called in-process, with the CPU sampling window set to
0: no window, %CPU is each process's lifetime average (CPU time / time since it started, what ps
prints); a window W > 0 adds W to every call (two reads W apart). The baseline is what a user
without the agent would run: psutil.process_iter over every process with comparable attributes.
A third figure shows what the same listing costs with psutil reading each member's facts. Each
figure is a median of wall time, with the calling thread's CPU time beside it: on a shared machine
the wall time also counts the time other work held the CPUs, the CPU time only ours.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psutil

from nsinspect.agent import procns
from nsinspect.agent.cri import CriClient
from nsinspect.agent.cri_resolver import CriResolver
from nsinspect.agent.model import PodRef
from nsinspect.agent.proc_resolver import ProcResolver
from nsinspect.agent.processes import ProcessLister
from nsinspect.agent.resolver import Resolver
from tests.bench.node import extra_processes, process_count
from tests.lab import runtime
from tests.lab.config import LabConfig
from tests.lab.pods import ContainerSpec, Lab, LabPod, PodSpec

ATTRS = ["pid", "ppid", "name", "cmdline", "status", "uids", "gids", "num_threads", "memory_info", "create_time",
         "cpu_times"]
POD = PodRef("bench", "bench-ps")


def timed(fn: Callable[[], object], runs: int, warmup: int = 2) -> tuple[float, float]:
    """Median wall and median CPU milliseconds (this thread's CPU time: what the call costs, whatever
    else the node's CPUs are busy with)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn()
        cpu.append((time.thread_time() - start_cpu) * 1000)
        wall.append((time.perf_counter() - start) * 1000)
    return statistics.median(wall), statistics.median(cpu)


@contextmanager
def busy_pod(lab: Lab, lister: ProcessLister, count: int) -> Iterator[LabPod]:
    forker = f"for i in $(seq {count}); do sleep 2147483647 </dev/null >/dev/null 2>&1 & done; exec sleep 2147483647"
    with lab.pod(PodSpec(POD.name, (ContainerSpec("app", command=("sh", "-c", forker)),),
                         namespace=POD.namespace)) as pod:
        deadline = time.monotonic() + 120
        while len(lister.discover(POD).members) < count + 2:  # the sleeps, the container's init, the sandbox
            if time.monotonic() > deadline:
                raise RuntimeError(f"the pod did not reach {count} processes")
            time.sleep(0.2)
        yield pod


def psutil_walk() -> int:
    psutil.process_iter.cache_clear()
    return sum(1 for _ in psutil.process_iter(ATTRS))


def psutil_members(lister: ProcessLister) -> int:
    """Our discovery, then psutil for each member's facts (what the issue's "use psutil" would cost)."""
    read = 0
    for m in lister.discover(POD).members:
        try:
            p = psutil.Process(m.pid)
            with p.oneshot():
                p.ppid(), p.name(), p.cmdline(), p.status(), p.uids(), p.gids(), p.num_threads(), p.memory_info()
                p.cpu_times()
            read += p.is_running()  # the identity check psutil offers (PID + create time)
        except psutil.Error:
            pass
    return read


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.ps", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=3000, help="extra idle processes on the node")
    p.add_argument("--pod-processes", type=int, default=1000, help="sleeps the pod's container forks")
    p.add_argument("--runs", type=int, default=15, help="calls per figure (the median is printed)")
    args = p.parse_args(argv)

    cfg = LabConfig()
    runtime.up(cfg)
    client = CriClient(cfg.endpoint)
    lister = ProcessLister(Resolver(CriResolver(client), ProcResolver([cfg.state])))
    with Lab(cfg) as lab, extra_processes(args.processes), busy_pod(lab, lister, args.pod_processes):
        listed = len(lister.list(POD).processes)
        print(f"node: {process_count()} processes; pod {POD}: {listed} processes; cgroup {procns.cgroup_mode()}; "
              f"{psutil.cpu_count()} CPUs", flush=True)
        ours = timed(lambda: lister.list(POD, cpu_sample=0.0), args.runs)
        discovery = timed(lambda: lister.discover(POD), args.runs)
        with_psutil = timed(lambda: psutil_members(lister), max(3, args.runs // 3), warmup=1)
        walk, walk_cpu = timed(psutil_walk, max(3, args.runs // 3), warmup=1)
    client.close()
    rows = [
        ("ListProcesses, agent-side (cpu sample 0), median", ours, "<= 100 ms, >= 3x faster"),
        ("  of which discovery (cgroups + /proc ns pass)", discovery, ""),
        ("Same listing with psutil for the facts, median", with_psutil, ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'ms':>7}  {'cpu ms':>7}  {'psutil walk ms':>14}  {'ratio':>6}  target")
    for what, (ms, cpu), target in rows:
        print(f"{what.ljust(width)}  {ms:7.1f}  {cpu:7.1f}  {walk:14.1f}  {walk / ms:5.1f}x  {target}")
    print(f"psutil walk: {walk_cpu:.1f} cpu ms; ratio = psutil walk / ours, both wall time in this run")
    print(f"baseline: psutil.process_iter({', '.join(ATTRS)}) over the whole node, cache cleared each run")
    print("cpu sample 0: %CPU is each process's lifetime average; a window W > 0 adds W to the call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
