"""ListProcesses against a full psutil walk of the node (`hack/bench ps`).

On the generated node, a lab pod's container forks 1,000 sleeps among the node's other processes. "Ours"
is the agent's own function, called in-process, with the CPU sampling window set to 0: no window, %CPU
is each process's lifetime average (CPU time / time since it started, what ps prints); a window W > 0
adds W to every call (two reads W apart). The baseline is what a user without the agent would run:
psutil.process_iter over every process with comparable attributes, cache cleared each run. A third
figure shows what the same listing costs with psutil reading each member's facts. Each figure is a
median of wall time; the calling thread's CPU time is in the note (on a shared machine the wall time
also counts the time other work held the CPUs, the CPU time only ours).
"""

from __future__ import annotations

import sys

import psutil

from nsinspect.agent.core.model import PodRef
from nsinspect.agent.observe.processes import ProcessLister
from testbed.bench.measure import wall_and_cpu
from testbed.bench.node import Sizes, Target, process_count
from testbed.bench.table import Row

ATTRS = ["pid", "ppid", "name", "cmdline", "status", "uids", "gids", "num_threads", "memory_info", "create_time",
         "cpu_times"]
WALK = "psutil walk"


def psutil_walk() -> int:
    psutil.process_iter.cache_clear()
    return sum(1 for _ in psutil.process_iter(ATTRS))


def psutil_members(lister: ProcessLister, ref: PodRef) -> int:
    """Our discovery, then psutil for each member's facts (what "use psutil" would cost)."""
    read = 0
    for m in lister.discover(ref).members:
        try:
            p = psutil.Process(m.pid)
            with p.oneshot():
                p.ppid(), p.name(), p.cmdline(), p.status(), p.uids(), p.gids(), p.num_threads(), p.memory_info()
                p.cpu_times()
            read += p.is_running()  # the identity check psutil offers (PID + create time)
        except psutil.Error:
            pass
    return read


def rows(target: Target, sizes: Sizes) -> list[Row]:
    ref = target.ps_pod
    client, resolver = target.resolver()
    lister = ProcessLister(resolver)
    listed, node = len(lister.list(ref, cpu_sample=0.0).processes), process_count()
    ours, ours_cpu = wall_and_cpu(lambda: lister.list(ref, cpu_sample=0.0), sizes.ps_runs)
    discovery, discovery_cpu = wall_and_cpu(lambda: lister.discover(ref), sizes.ps_runs)
    with_psutil, with_psutil_cpu = wall_and_cpu(lambda: psutil_members(lister, ref), max(3, sizes.ps_runs // 3),
                                                warmup=1)
    walk, walk_cpu = wall_and_cpu(psutil_walk, max(3, sizes.ps_runs // 3), warmup=1)
    client.close()
    cpu = f"cpu ms: ours {ours_cpu:.1f}, discovery {discovery_cpu:.1f}, psutil facts {with_psutil_cpu:.1f}, " \
          f"walk {walk_cpu:.1f}"
    return [
        Row(f"ListProcesses, {listed:,} of {node:,} processes (cpu sample 0), median", ours, WALK, walk,
            target="<= 100 ms and >= 3x faster", met=ours <= 100 and walk / ours >= 3, note=cpu),
        Row("  of which discovery (cgroups + /proc ns pass), median", discovery, WALK, walk),
        Row("  same listing with psutil for the facts, median", with_psutil, WALK, walk),
    ]


if __name__ == "__main__":
    from testbed.bench.__main__ import main
    sys.exit(main(["ps", *sys.argv[1:]]))
