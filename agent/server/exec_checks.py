"""What an Exec stream must send before anything runs: its `start` message, in time, and within the
limits of the one message the plan becomes.

A caller that sends nothing must not hold one of the agent's workers for long (FIRST_MESSAGE_WITHIN,
and past admission's GRACE the stream counts as pending); argv, environment and paths are bounded
so that the plan fits one SEQPACKET message to the helper (MAX_PLAN_TEXT); tools mode needs a
toolbox and keeps its own mount namespace. Every refusal here is audited, as the guard audits its
own decisions. And how much of the container's confinement the command must get (confinement_mode).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from nsinspect.proto import exec_pb2 as pb

from ..core import validate
from ..core.errors import CallerGone, InvalidArgument, NsinspectError
from ..core.model import PodRef
from ..linux.helperwire import MSG_MAX
from .admission import GRACE
from .auth.guard import Guard, refused, waiting_on_caller
from .auth.policy import exec_elevation

MAX_ARGS_BYTES = 128 * 1024
MAX_PLAN_TEXT = MSG_MAX - 8192  # argv, env and paths as JSON: the plan is one message to the helper
FIRST_MESSAGE_WITHIN = 5.0  # a client sends `start` as it opens the stream; a pending stream holds a worker


@dataclass(frozen=True)
class ExecConfig:
    toolbox: str = ""
    idle_timeout: float = 0.0  # seconds without input or output; 0: never
    start_timeout: float = 10.0
    join: str = "auto"


def _first(requests: Iterator[pb.ExecRequest], context: grpc.ServicerContext, within: float,
           waiting: Callable[[], None]) -> pb.ExecRequest | None:
    """The stream's first message, or InvalidArgument after `within` seconds: a caller that sends
    nothing must not hold one of the agent's workers for long, nor many of them (after GRACE, the
    stream is pending: `waiting()` refuses it beyond the limits). CallerGone when the call was
    cancelled (its request stream broke). (The reading thread ends with the call.)"""
    box: queue.Queue[pb.ExecRequest | BaseException | None] = queue.Queue(1)

    def read() -> None:
        try:
            box.put(next(requests, None))
        except BaseException as err:  # the call ended: the handler has returned already, or gets this
            box.put(err)

    threading.Thread(target=read, name="exec-first", daemon=True).start()
    try:
        try:
            first = box.get(timeout=GRACE)
        except queue.Empty:
            waiting()
            first = box.get(timeout=within - GRACE)
    except queue.Empty:
        raise InvalidArgument(f"no `start` message within {within:g} s of opening the Exec stream") from None
    if isinstance(first, grpc.RpcError) or (first is None and _ended(context)):  # cancelled, not half-closed
        raise CallerGone("the caller went away before sending `start`") from None
    if isinstance(first, BaseException):
        raise first
    return first


def _ended(context: grpc.ServicerContext, within: float = 0.05) -> bool:
    """Whether the call ends within `within` seconds: a request stream that ends without a message
    is the client's half-close, or its cancellation a moment before grpc tells the call so."""
    ended = threading.Event()
    if not context.add_callback(ended.set):
        return True
    return ended.wait(within)


class NoToolbox(NsinspectError):
    """Tools mode was asked for, and this agent has no toolbox."""

    status = grpc.StatusCode.FAILED_PRECONDITION


def _text(value: str, what: str, limit: int = 4096) -> str:
    if "\0" in value or len(value) > limit:
        raise InvalidArgument(f"invalid {what}: no NUL characters and at most {limit} characters")
    return value


def _check_start(start: pb.ExecStart, config: ExecConfig) -> tuple[PodRef, str, tuple[str, ...]]:
    ref = validate.pod_ref(start.pod.namespace, start.pod.name, start.pod.uid)
    container = validate.container_name(start.container)
    namespaces = validate.ns_types(start.namespaces) if start.namespaces else ()
    if not start.argv or not start.argv[0]:
        raise InvalidArgument("a command is required (argv is empty)")
    if sum(len(_text(a, "argument", MAX_ARGS_BYTES)) + 1 for a in start.argv) > MAX_ARGS_BYTES:
        raise InvalidArgument(f"the command line is longer than {MAX_ARGS_BYTES} bytes")
    for key, value in start.env.items():
        if not key or "=" in key:
            raise InvalidArgument(f"invalid environment variable name {key[:80]!r}")
        _text(key, "environment variable name")
        _text(value, "environment variable value", MAX_ARGS_BYTES)
    _text(start.workdir, "working directory")
    _text(start.root, "root")
    size = len(json.dumps([list(start.argv), sorted(start.env.items()), start.workdir, start.root]).encode())
    if size > MAX_PLAN_TEXT:
        raise InvalidArgument(f"the command, its environment and paths are too long: {size} bytes as sent to the "
                              f"exec helper, at most {MAX_PLAN_TEXT}")
    if start.tools:
        if not config.toolbox:
            raise NoToolbox("this agent has no toolbox: start it with --toolbox DIR to use tools mode")
        if "mnt" in namespaces:
            raise InvalidArgument("tools mode keeps a private mount namespace (the target's files are at /target): "
                                  "leave mnt out")
        if start.root:
            raise InvalidArgument("root cannot be changed in tools mode")
    return ref, container, namespaces


def confinement_mode(start: pb.ExecStart) -> str:
    """How much of the container's confinement the command must get (core.plan.Plan.confine): all of it
    as the container runs; what can be reproduced when the caller asked for nsenter semantics
    (elevated, so holding pods/nsenter); none of it for --privileged, the agent's own powers."""
    if start.privileged:
        return "none"
    return "best" if exec_elevation(start) else "strict"


def read_start(requests: Iterator[pb.ExecRequest], context: grpc.ServicerContext, guard: Guard,
               config: ExecConfig) -> tuple[pb.ExecStart, PodRef, str, tuple[str, ...]]:
    """The stream's `start` and what _check_start makes of it. A refusal here is audited, as the
    guard audits its own decisions: every call gets its one audit line."""
    first = None
    try:
        first = _first(requests, context, FIRST_MESSAGE_WITHIN, lambda: waiting_on_caller(guard, context))
        if first is None or first.WhichOneof("msg") != "start":
            raise InvalidArgument("the first message of an Exec stream must be `start`")
        return (first.start, *_check_start(first.start, config))
    except Exception as err:
        refused(guard, context, "Exec", err, first.start.pod if first is not None and first.HasField("start") else None)
        raise
