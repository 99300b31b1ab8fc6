"""`MetricsInterceptor`: every RPC counted and timed by method and the status code it ended with
(nsinspect_rpc_total, nsinspect_rpc_duration_seconds: agent/server/metrics.py). The outermost
interceptor, so calls the auth interceptor refuses count too; streams count when they end."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from .handlers import Behavior, rewrap
from .metrics import UNREGISTERED, Metrics


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

