"""Inspect and the node map against `lsns -J` (which reads every process's namespaces, as a user
without the agent would), on the same node in the same run."""

from __future__ import annotations

import statistics
import subprocess
import time

import grpc

from nsinspect.agent.observe import nodemap
from nsinspect.agent.observe.inspect import Inspector
from nsinspect.agent.procfs import procns
from nsinspect.agent.resolve.cri_source import CriResolver
from nsinspect.agent.resolve.fallback import Resolver
from nsinspect.agent.resolve.proc_source import ProcResolver
from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc
from testbed.bench.measure import median_ms, percentile, timings
from testbed.bench.node import Sizes, Target
from testbed.bench.table import Row

LSNS = "lsns -J"


def lsns_ms(target: Target, runs: int = 7) -> float:
    """Median of `runs` complete `lsns -J` runs. A run fails now and then on a busy node (a process
    ends while lsns reads it); such runs are not counted, and tried again."""
    def measure() -> float:
        subprocess.run(["lsns", "-J"], capture_output=True)  # warm-up
        done: list[float] = []
        for _ in range(runs * 3):
            began = time.perf_counter()
            if subprocess.run(["lsns", "-J"], capture_output=True).returncode == 0:
                done.append((time.perf_counter() - began) * 1000)
                if len(done) == runs:
                    return statistics.median(done)
        raise RuntimeError(f"lsns -J failed {runs * 2 + 1} times out of {runs * 3}")

    return target.once(LSNS, measure)


def inspect_rows(target: Target, sizes: Sizes) -> list[Row]:
    lsns = lsns_ms(target)
    ref = target.inspect_pod
    client, resolver = target.resolver()
    inspector = Inspector(resolver)
    warm = timings(lambda: inspector.inspect(ref), sizes.runs)
    cold = timings(lambda: Inspector(Resolver(CriResolver(client), ProcResolver(list(target.state_dirs))))
                   .inspect(ref), max(sizes.runs // 5, 5))
    proc_only = Inspector(Resolver(None, ProcResolver(list(target.state_dirs))))
    fallback = timings(lambda: proc_only.inspect(ref), sizes.runs)
    client.close()
    with grpc.insecure_channel(target.agent) as channel:
        stub = pb_grpc.AgentStub(channel)
        request = pb.InspectRequest(pod=pb.PodRef(namespace=ref.namespace, name=ref.name))
        rpc = timings(lambda: stub.Inspect(request), sizes.runs)
    median = statistics.median(warm)

    def row(what: str, ours: float, target_text: str = "", met: bool | None = None) -> Row:
        return Row(what, ours, LSNS, lsns, target=target_text, met=met)

    return [
        row("Inspect, agent-side, median", median, "<= 2 ms and >= 100x faster",
            median <= 2 and lsns / median >= 100),
        row("Inspect, agent-side, p99", percentile(warm, 99)),
        row("Inspect, uncached CRI, median", statistics.median(cold)),
        row("Inspect, /proc fallback (CRI down), median", statistics.median(fallback)),
        row("Inspect over gRPC (unix socket), median", statistics.median(rpc)),
        row("Inspect over gRPC (unix socket), p99", percentile(rpc, 99)),
    ]


def nodemap_rows(target: Target, sizes: Sizes) -> list[Row]:
    lsns = lsns_ms(target)
    client, resolver = target.resolver()

    def node_map() -> object:
        pods, _ = resolver.list_pods()
        return nodemap.build_node_map(pods, procns.read_host())

    ours = median_ms(node_map, 7, warmup=1)
    client.close()
    return [Row("Node map (all pods, all types), median", ours, LSNS, lsns, target="<= 0.5x the time",
                met=ours <= 0.5 * lsns)]
