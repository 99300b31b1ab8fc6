"""`AuthInterceptor`: every RPC but Health/Check is authenticated (and admitted: see Guard.admit)
before its handler runs, and a request that does not decode is answered INVALID_ARGUMENT instead
of gRPC's INTERNAL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from ...core.errors import InvalidArgument
from ..handlers import Behavior, rewrap
from .guard import Guard

HEALTH_CHECK = "/grpc.health.v1.Health/Check"  # the probes' one call; Watch would hold a worker: refused


@dataclass(frozen=True)
class Malformed:
    """A request that did not decode: the handler answers INVALID_ARGUMENT instead of gRPC's INTERNAL."""

    error: str


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def load(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as err:
            return Malformed(str(err)[:200] or type(err).__name__)

    return load


def _checked(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, Malformed):
            raise InvalidArgument(f"malformed request message: {request.error}")
        yield request


class AuthInterceptor(grpc.ServerInterceptor):
    """Authenticates every RPC but grpc.health.v1 Check before its handler runs (see Guard.admit)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        open_call = method == HEALTH_CHECK
        guard = self.guard

        def before(request: Any, context: grpc.ServicerContext) -> None:
            guard.authenticator.forget()  # a new call on this thread
            if not open_call:
                guard.admit(context, method, request)
            if isinstance(request, Malformed):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request message: {request.error}")

        def wrap(inner: Behavior, kind: str) -> Behavior:
            streaming_in = kind.startswith("stream")

            def behavior(request: Any, context: grpc.ServicerContext) -> Any:
                before(None if streaming_in else request, context)
                return inner(_checked(request) if streaming_in else request, context)

            return behavior

        return rewrap(handler, wrap, _tolerant(handler.request_deserializer))
