"""`.venv/bin/python -m testbed.bench.auth [--runs N]`: what authentication and authorization cost a call.

The same Inspect of a lab pod, in one run, against the real agent:
- over its unix socket (root: the interceptor runs, no review is asked) - the baseline;
- over loopback TCP with a bearer token, reviews cached (the usual case: one TokenReview and one
  SubjectAccessReview per user, pod and verb every 10 s);
- over loopback TCP with a bearer token and both caches off (`--authn-cache-ttl 0
  --authz-cache-ttl 0`): a TokenReview and a SubjectAccessReview against the API server stand-in
  (HTTPS on loopback, kept alive) on every call: the worst case, a cold cache.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
from pathlib import Path

import grpc

from nsinspect.cli.agentclient import Credentials, open_channel
from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc
from testbed.agentproc import free_port, running_agent
from testbed.bench.measure import percentile, timings
from testbed.cluster.standin import Cluster
from testbed.lab import runtime
from testbed.lab.config import LabConfig
from testbed.lab.pods import Lab


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.bench.auth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=300, help="calls per figure")
    args = p.parse_args(argv)
    cfg = LabConfig()
    runtime.up(cfg)
    request = pb.InspectRequest(pod=pb.PodRef(namespace="default", name="targeted"))
    figures: dict[str, list[float]] = {}
    with Lab(cfg) as lab, Cluster() as api, tempfile.TemporaryDirectory() as tmp:
        lab.ensure_canonical(lambda _: None)
        # The stand-in writes headers and body apart; with Nagle on, each answer waits for the client's
        # delayed ACK (40 ms). Real API servers (Go) set TCP_NODELAY; accepted sockets inherit it.
        api.server._httpd.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        kubeconfig = api.kubeconfig(Path(tmp) / "agent.kubeconfig", "agent-token")
        for name, ttl in (("cached", "10s"), ("uncached", "0")):
            port = free_port()
            with running_agent(cfg, Path(tmp) / f"{name}.sock", "--listen", f"tcp://127.0.0.1:{port}",
                               "--authn-cache-ttl", ttl, "--authz-cache-ttl", ttl, "--audit-log",
                               str(Path(tmp) / f"{name}.audit"), kubeconfig=kubeconfig) as unix:
                if name == "cached":
                    with grpc.insecure_channel(unix) as channel:
                        stub = pb_grpc.AgentStub(channel)
                        figures["unix socket (root, no review)"] = timings(lambda s=stub: s.Inspect(request),  # type: ignore[misc]
                                                                           args.runs, warmup=10)
                with open_channel(f"127.0.0.1:{port}", Credentials(token="alice-token")) as channel:
                    stub = pb_grpc.AgentStub(channel)
                    figures[f"TCP + token, reviews {name}"] = timings(lambda s=stub: s.Inspect(request),  # type: ignore[misc]
                                                                      args.runs, warmup=10)
    base = statistics.median(figures["unix socket (root, no review)"])
    width = max(len(k) for k in figures)
    print(f"{'Inspect of a lab pod over gRPC'.ljust(width)}  {'median':>9}  {'p90':>9}  vs unix socket")
    for what, values in figures.items():
        median = statistics.median(values)
        print(f"{what.ljust(width)}  {median:7.2f}ms  {percentile(values, 90):7.2f}ms  {median - base:+.2f} ms "
              f"({median / base:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
