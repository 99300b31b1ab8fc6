"""The agent's Prometheus metrics: the one registry and what is in it. The RPCs are counted by
agent/server/metrics_interceptor.py, and served over HTTP by agent/server/metrics_endpoint.py.

One `Metrics` per agent holds every metric in its own `CollectorRegistry` (never the process-wide
default, so tests and embedders can make as many as they like). The parts that see something get
it passed in and call one small method: the resolver `resolution` and `runtime_error`, the guard
`decision`, `MetricsInterceptor` (the outermost server interceptor, so refusals by auth count too)
every RPC with the status code it ended with. Streaming RPCs (Exec, reflection) count when their
stream ends. Health checks are counted but not timed: probes and long health watches stay out of
the latency histogram.

    nsinspect_rpc_total{method,code}               RPCs ended, by full gRPC method and status code name
    nsinspect_rpc_duration_seconds{method,code}    their duration (histogram, 1 ms .. 10 s; not health,
                                                   not calls to methods the agent does not serve)
    nsinspect_exec_sessions_active                 Exec sessions running now
    nsinspect_resolutions_total{source}            pods resolved (or listed) from "cri" or the "proc" fallback
    nsinspect_runtime_errors_total{kind}           failed CRI calls, by status code ("unavailable", ...)
    nsinspect_authz_decisions_total{rpc,decision}  decisions the audit log records: allow, deny, error
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

HEALTH = "/grpc.health.v1.Health/"
UNREGISTERED = "unregistered"  # the method label of calls to methods the agent does not serve
SOURCES = ("cri", "proc")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rpcs = Counter("nsinspect_rpc", "RPCs ended, by method and status code", ("method", "code"), registry=r)
        self.rpc_seconds = Histogram("nsinspect_rpc_duration_seconds",
                                     "How long RPCs took, by method and status code (health checks are not timed)",
                                     ("method", "code"), buckets=BUCKETS, registry=r)
        self.exec_sessions = Gauge("nsinspect_exec_sessions_active", "Exec sessions running now", registry=r)
        self.resolutions = Counter("nsinspect_resolutions", "Pods resolved or listed, by source: CRI or /proc",
                                   ("source",), registry=r)
        self.runtime_errors = Counter("nsinspect_runtime_errors", "Failed CRI calls, by kind", ("kind",), registry=r)
        self.decisions = Counter("nsinspect_authz_decisions", "Authorization decisions, by RPC and decision",
                                 ("rpc", "decision"), registry=r)
        for source in SOURCES:
            self.resolutions.labels(source)  # both series exist from the start, at 0

    def rpc(self, method: str, code: grpc.StatusCode, seconds: float | None) -> None:
        """One RPC ended; `seconds` None: not timed (it never reached a handler)."""
        self.rpcs.labels(method, code.name).inc()
        if seconds is not None and not method.startswith(HEALTH):
            self.rpc_seconds.labels(method, code.name).observe(seconds)

    def resolution(self, source: str) -> None:
        self.resolutions.labels(source).inc()

    def runtime_error(self, kind: str) -> None:
        self.runtime_errors.labels(kind).inc()

    def decision(self, rpc: str, decision: str) -> None:
        self.decisions.labels(rpc, decision).inc()

    def count_sessions(self, active: Callable[[], int]) -> None:
        """The session gauge reads `active()` at every scrape: it cannot drift from the truth."""
        self.exec_sessions.set_function(active)

