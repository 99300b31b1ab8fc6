"""Which gRPC status each failure of the agent's becomes: one table, so a caller can rely on it.

The exception family (core/errors.py) knows nothing of gRPC; this maps each class to its code, the
nearest class in an exception's MRO winning. An exception of the server's own may name its status
itself (`status`, a grpc.StatusCode): the exec helper's reported failures do. Anything else is
INTERNAL: a bug of ours, reported as one and never with its details.

Every handler runs behind `answers_errors`, which turns the agent's exception family into these
precise status codes and anything unexpected into INTERNAL, so one bad request never takes the
agent down. A caller that went away (cancelled, or its request stream broke) is no failure of the
agent: its call ends CANCELLED, logged at debug level.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from ..core.errors import (
    CallerGone,
    InvalidArgument,
    NotFound,
    NotRunning,
    NsinspectError,
    PermissionDenied,
    ResourceExhausted,
    RuntimeUnavailable,
    Unauthenticated,
    Unconfinable,
)

log = logging.getLogger(__name__)
R = TypeVar("R")

STATUS: dict[type[BaseException], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    NotRunning: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    RuntimeUnavailable: grpc.StatusCode.UNAVAILABLE,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Unconfinable: grpc.StatusCode.FAILED_PRECONDITION,
    CallerGone: grpc.StatusCode.CANCELLED,
    NsinspectError: grpc.StatusCode.UNKNOWN,
}


def status_of(err: BaseException) -> grpc.StatusCode:
    """The status `err` is answered with."""
    own = getattr(err, "status", None)
    if isinstance(own, grpc.StatusCode):
        return own
    for cls in type(err).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL


def abort(context: grpc.ServicerContext, err: NsinspectError) -> NoReturn:
    """End the call with `err`'s status and message."""
    context.abort(status_of(err), str(err))


def _answer_failure(context: grpc.ServicerContext, rpc: str, err: Exception) -> NoReturn:
    current = getattr(context, "code", lambda: None)()  # ServicerContext.code(): grpc >= 1.38, untyped
    if current not in (None, grpc.StatusCode.OK):
        raise err  # the handler already aborted with its own status: keep it
    if isinstance(err, CallerGone) or not context.is_active():  # nobody to answer
        log.debug("the caller went away", extra={"rpc": rpc, "error": str(err) or type(err).__name__})
        context.abort(grpc.StatusCode.CANCELLED, "the caller went away")
    if isinstance(err, NsinspectError):
        log.info("request refused", extra={"rpc": rpc, "code": status_of(err).name, "error": str(err)})
        abort(context, err)
    log.error("request failed", extra={"rpc": rpc}, exc_info=err)
    context.abort(grpc.StatusCode.INTERNAL, "internal error in the agent (details are in its log)")
    raise AssertionError("unreachable: context.abort raises")


def answers_errors(method: Callable[..., R]) -> Callable[..., R]:
    """Turn the exception family into precise status codes, for unary and streaming handlers alike."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except Exception as err:
                _answer_failure(context, method.__name__, err)

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> R:
        try:
            return method(self, request, context)
        except Exception as err:
            _answer_failure(context, method.__name__, err)

    return unary
