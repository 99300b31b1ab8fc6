"""A plain gRPC client of nsinspect.v1.Exec for tests and benchmarks (the CLI is tested on its own)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from nsinspect.proto import agent_pb2
from nsinspect.proto import exec_pb2 as pb
from nsinspect.proto import exec_pb2_grpc as pb_grpc


def start(pod: str, *argv: str, namespace: str = "default", **fields: Any) -> pb.ExecStart:
    return pb.ExecStart(pod=agent_pb2.PodRef(namespace=namespace, name=pod), argv=list(argv), **fields)


@dataclass
class Result:
    started: pb.ExecStarted | None
    stdout: bytes
    stderr: bytes
    exit: pb.ExecExit | None


def run(stub: pb_grpc.ExecStub, begin: pb.ExecStart, stdin: Iterable[bytes] = (), timeout: float = 120) -> Result:
    """One whole session: send stdin (then end-of-file), collect everything that comes back."""
    def requests() -> Iterator[pb.ExecRequest]:
        yield pb.ExecRequest(start=begin)
        for chunk in stdin:
            yield pb.ExecRequest(stdin=chunk)
        yield pb.ExecRequest(close_stdin=True)

    started, out, err, end = None, [], [], None
    for resp in stub.Exec(requests(), timeout=timeout):
        kind = resp.WhichOneof("msg")
        if kind == "started":
            started = resp.started
        elif kind == "stdout":
            out.append(resp.stdout)
        elif kind == "stderr":
            err.append(resp.stderr)
        elif kind == "exit":
            end = resp.exit
    return Result(started, b"".join(out), b"".join(err), end)


class Live:
    """A session kept open: requests are sent when asked, responses read as they come."""

    def __init__(self, stub: pb_grpc.ExecStub, begin: pb.ExecStart) -> None:
        self._requests: queue.Queue[pb.ExecRequest | None] = queue.Queue()
        self._requests.put(pb.ExecRequest(start=begin))
        self.call: Any = stub.Exec(self._gen())
        self._responses = iter(self.call)
        self.stdout = b""
        self.started: pb.ExecStarted | None = None
        self.exit: pb.ExecExit | None = None
        self._lock = threading.Lock()

    def _gen(self) -> Iterator[pb.ExecRequest]:
        while (item := self._requests.get()) is not None:
            yield item

    def send(self, **fields: Any) -> None:
        self._requests.put(pb.ExecRequest(**fields))

    def next(self) -> pb.ExecResponse | None:
        resp: pb.ExecResponse | None = next(self._responses, None)
        if resp is None:
            return None
        kind = resp.WhichOneof("msg")
        if kind == "started":
            self.started = resp.started
        elif kind == "stdout":
            self.stdout += resp.stdout
        elif kind == "exit":
            self.exit = resp.exit
        return resp

    def wait_started(self) -> pb.ExecStarted:
        while self.started is None:
            if self.next() is None:
                raise AssertionError("the session ended before it started")
        return self.started

    def read_until(self, token: bytes) -> bytes:
        while token not in self.stdout:
            if self.next() is None:
                raise AssertionError(f"the session ended before {token!r}: {self.stdout[-500:]!r}")
        return self.stdout

    def wait_exit(self) -> pb.ExecExit:
        while self.next() is not None:
            pass
        assert self.exit is not None, "no exit message"
        return self.exit

    def cancel(self) -> None:
        self.call.cancel()
        self.close()

    def close(self) -> None:
        self._requests.put(None)
        with contextlib.suppress(grpc.RpcError):
            while self.next() is not None:
                pass
