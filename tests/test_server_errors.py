"""The agent's error mapping on a real gRPC server, for unary and streaming handlers alike."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from nsinspect.agent.core.errors import NotFound, ResourceExhausted
from nsinspect.agent.server.status import answers_errors
from nsinspect.proto.rpcerror import rpc_status


class Handlers:
    @answers_errors
    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        raise NotFound("pod default/x not found")

    @answers_errors
    def stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"first"
        raise ResourceExhausted("too many sessions")

    @answers_errors
    def crash(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"first"
        raise KeyError("secret detail")

    @answers_errors
    def own_abort(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.ALREADY_EXISTS, "handler's own status")


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    h = Handlers()
    ident: Any = None
    handlers = {
        "unary": grpc.unary_unary_rpc_method_handler(h.unary, ident, ident),
        "stream": grpc.unary_stream_rpc_method_handler(h.stream, ident, ident),
        "crash": grpc.unary_stream_rpc_method_handler(h.crash, ident, ident),
        "own_abort": grpc.unary_unary_rpc_method_handler(h.own_abort, ident, ident),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.T", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    server.stop(0)


def _fail(call: Any) -> tuple[grpc.StatusCode | None, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return rpc_status(err.value)


def test_unary_error_keeps_its_code(channel: grpc.Channel) -> None:
    call: Any = channel.unary_unary("/test.T/unary")
    assert _fail(lambda: call(b"")) == (grpc.StatusCode.NOT_FOUND, "pod default/x not found")


def test_stream_error_keeps_its_code(channel: grpc.Channel) -> None:
    call: Any = channel.unary_stream("/test.T/stream")
    received: list[bytes] = []
    code, details = _fail(lambda: received.extend(call(b"")))
    assert received == [b"first"] and (code, details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "too many sessions")


def test_unexpected_errors_are_internal_and_say_nothing_inside(channel: grpc.Channel) -> None:
    call: Any = channel.unary_stream("/test.T/crash")
    code, details = _fail(lambda: list(call(b"")))
    assert code == grpc.StatusCode.INTERNAL and "secret" not in details


def test_a_handlers_own_abort_is_kept(channel: grpc.Channel) -> None:
    call: Any = channel.unary_unary("/test.T/own_abort")
    assert _fail(lambda: call(b"")) == (grpc.StatusCode.ALREADY_EXISTS, "handler's own status")
