"""`hack/bench [inspect|nodemap|all] [--processes N] [--pods N]`: our figures against the tools
users would otherwise run, on one generated node, in one run. Prints a table with the ratios."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from nsinspect.agent import nodemap, procns
from nsinspect.agent.cri import CriClient
from nsinspect.agent.cri_resolver import CriResolver
from nsinspect.agent.inspector import Inspector
from nsinspect.agent.model import PodRef
from nsinspect.agent.proc_resolver import ProcResolver
from nsinspect.agent.resolver import Resolver
from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc
from tests.agentproc import running_agent
from tests.bench.node import extra_pods, extra_processes, process_count
from tests.lab import runtime
from tests.lab.config import LabConfig
from tests.lab.pods import Lab

Row = tuple[str, float, str, float, str]  # what, ours (ms), baseline name, baseline (ms), target


def timings(fn: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]


def lsns_ms(runs: int = 7) -> float:
    return statistics.median(timings(lambda: subprocess.run(["lsns", "-J"], check=True, capture_output=True),
                                     runs, warmup=1))


def bench_inspect(cfg: LabConfig, lsns: float, runs: int) -> list[Row]:
    client = CriClient(cfg.endpoint)
    resolver = Resolver(CriResolver(client), ProcResolver([cfg.state]))
    inspector = Inspector(resolver)
    ref = PodRef("default", "targeted")
    warm = timings(lambda: inspector.inspect(ref), runs)
    cold = timings(lambda: Inspector(Resolver(CriResolver(client), ProcResolver([cfg.state]))).inspect(ref),
                   max(runs // 5, 20))
    proc_only = Inspector(Resolver(None, ProcResolver([cfg.state])))
    fallback = timings(lambda: proc_only.inspect(ref), runs)
    rows: list[Row] = [
        ("Inspect, agent-side, median", statistics.median(warm), "lsns -J", lsns, "<= 2 ms, >= 100x faster"),
        ("Inspect, /proc fallback (CRI down), median", statistics.median(fallback), "lsns -J", lsns, ""),
        ("Inspect, agent-side, p99", p99(warm), "lsns -J", lsns, ""),
        ("Inspect, uncached CRI, median", statistics.median(cold), "lsns -J", lsns, ""),
    ]
    with tempfile.TemporaryDirectory() as tmp, running_agent(cfg, Path(tmp) / "a.sock") as address, \
            grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AgentStub(channel)
        request = pb.InspectRequest(pod=pb.PodRef(namespace="default", name="targeted"))
        rpc = timings(lambda: stub.Inspect(request), runs)
        rows.append(("Inspect over gRPC (unix socket), median", statistics.median(rpc), "lsns -J", lsns, ""))
        rows.append(("Inspect over gRPC (unix socket), p99", p99(rpc), "lsns -J", lsns, ""))
    client.close()
    return rows


def bench_nodemap(cfg: LabConfig, lsns: float) -> list[Row]:
    client = CriClient(cfg.endpoint)
    resolver = Resolver(CriResolver(client), ProcResolver([cfg.state]))

    def node_map() -> object:
        pods, _ = resolver.list_pods()
        return nodemap.build_node_map(pods, procns.read_host())

    ours = statistics.median(timings(node_map, 7, warmup=1))
    client.close()
    return [("Node map (all pods, all types), median", ours, "lsns -J", lsns, "<= 0.5x lsns -J")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hack/bench", description=__doc__)
    p.add_argument("what", nargs="?", default="all", choices=("all", "inspect", "nodemap"))
    p.add_argument("--processes", type=int, default=3000, help="extra idle processes on the node")
    p.add_argument("--pods", type=int, default=50, help="extra lab pods (2 containers each)")
    p.add_argument("--runs", type=int, default=500, help="calls per latency figure")
    args = p.parse_args(argv)

    cfg = LabConfig()
    runtime.up(cfg)
    with Lab(cfg) as lab:
        lab.ensure_canonical(lambda _: None)
        print(f"node: generating {args.pods} pods and {args.processes} processes ...", file=sys.stderr)
        with extra_pods(lab, args.pods) as pods, extra_processes(args.processes):
            print(f"node: {process_count()} processes, {len(pods) + 6} lab pods, "
                  f"cgroup {procns.cgroup_mode()}", flush=True)
            lsns = lsns_ms()
            rows: list[Row] = []
            if args.what in ("all", "inspect"):
                rows += bench_inspect(cfg, lsns, args.runs)
            if args.what in ("all", "nodemap"):
                rows += bench_nodemap(cfg, lsns)
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'ours ms':>9}  {'baseline':<8} {'base ms':>9}  {'ratio':>9}  target")
    for what, ours, base_name, base, target in rows:
        ratio = f"{base / ours:.0f}x" if ours < base / 2 else f"{ours / base:.2f}"
        print(f"{what.ljust(width)}  {ours:9.3f}  {base_name:<8} {base:9.1f}  {ratio:>9}  {target}")
    print("ratio: Nx = ours is N times faster; a plain number = ours / baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
