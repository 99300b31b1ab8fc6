"""The agent's Prometheus metrics, and the loopback-only HTTP endpoint that serves them.

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

import argparse
import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .handlers import Behavior, rewrap

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


# -- RPCs --------------------------------------------------------------------------------------------------
def _final_code(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    """The status the call ends with, as grpc decides it: the client went away (or its deadline
    passed): CANCELLED; else the code the handler aborted with or set; else OK, or UNKNOWN when an
    exception escaped."""
    if not context.is_active():
        return grpc.StatusCode.CANCELLED
    # ServicerContext.code() (grpc >= 1.38, untyped): None unless the handler aborted or set a code
    code: grpc.StatusCode | None = getattr(context, "code", lambda: None)()
    if code is not None:
        return code
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


def _timed_stream(responses: Iterator[Any], context: grpc.ServicerContext,
                  done: Callable[[grpc.StatusCode], None]) -> Iterator[Any]:
    failed = True
    try:
        yield from responses
        failed = False
    finally:  # also when grpc drops the stream (cancelled): it closes the generator
        done(_final_code(context, failed))


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts and times every RPC by method and final status code. Put it first (outermost)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:  # grpc answers UNIMPLEMENTED; the name is the client's: keep it out of labels
            self.metrics.rpc(UNREGISTERED, grpc.StatusCode.UNIMPLEMENTED, None)
            return None
        method, metrics = handler_call_details.method, self.metrics

        def wrap(inner: Behavior, kind: str) -> Behavior:
            streaming_out = kind.endswith("stream")

            def behavior(request: Any, context: grpc.ServicerContext) -> Any:
                began = time.perf_counter()

                def done(code: grpc.StatusCode) -> None:
                    metrics.rpc(method, code, time.perf_counter() - began)

                failed = True
                try:
                    result = inner(request, context)
                    failed = False
                finally:
                    if failed or not streaming_out:
                        done(_final_code(context, failed))
                return _timed_stream(result, context, done) if streaming_out else result

            return behavior

        return rewrap(handler, wrap)


# -- the endpoint ------------------------------------------------------------------------------------------
def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) on a loopback address, else ValueError. Port 0: any free one.

    Loopback only, as for the agent's gRPC TCP listeners: the metrics name pods' RPCs and callers'
    failures, and the agent is root on the node. In a cluster, scrape them from inside the pod."""
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid --metrics-listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"refusing to serve metrics on {listen}: loopback addresses only "
                         "(127.0.0.1, ::1 or localhost)")
    return host, int(port)


def listen_flag(listen: str) -> str:
    """argparse's type for --metrics-listen: a bad address stops the agent at once, saying why."""
    try:
        parse_listen(listen)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return listen


@dataclass
class MetricsServer:
    url: str  # http://HOST:PORT/metrics, with the port bound
    stop: Callable[[], None]


def serve(metrics: Metrics, listen: str) -> MetricsServer:
    """Serve `metrics` over HTTP on loopback `listen` (see parse_listen) from a daemon thread."""
    host, port = parse_listen(listen)
    httpd, thread = start_http_server(port, host, registry=metrics.registry)
    bound = httpd.server_address[1]
    shown = f"[{host}]" if ":" in host else host

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        if thread is not threading.current_thread():
            thread.join(timeout=2)

    return MetricsServer(f"http://{shown}:{bound}/metrics", stop)
