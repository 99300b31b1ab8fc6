"""One gRPC method handler's behaviour wrapped, whichever of the four kinds it is: what the agent's
interceptors (agent/server/auth/interceptor.py, agent/server/metrics_interceptor.py) have in common."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behavior = Callable[[Any, grpc.ServicerContext], Any]  # (request or request iterator, context) -> response(s)

_KINDS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler), ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler), ("stream_stream", grpc.stream_stream_rpc_method_handler))


def rewrap(handler: Any, wrap: Callable[[Behavior, str], Behavior],
           request_deserializer: Callable[[bytes], Any] | None = None) -> Any:
    """`handler` with its behaviour replaced by `wrap(behaviour, kind)`, kind being "unary_unary",
    "unary_stream", "stream_unary" or "stream_stream" (and its deserializer, when one is given)."""
    for kind, make in _KINDS:
        inner = getattr(handler, kind)
        if inner is not None:
            return make(wrap(inner, kind), request_deserializer=request_deserializer or handler.request_deserializer,
                        response_serializer=handler.response_serializer)
    return handler
