"""`nsinspect exec`: run a command in a pod container's namespaces through the node agent.

For clusters where ephemeral containers are disabled or forbidden: nothing in the pod changes.
It behaves like `kubectl exec`: stdout and stderr stay apart (merged with -t, like a terminal),
-i passes stdin, -t puts the local terminal in raw mode and follows its resizes, and the exit
code is the remote command's (128+N when signal N killed it). Without a terminal, SIGINT and
SIGTERM are passed on to the command; a third SIGINT gives up on it and ends the session.
`debug -i` and its fallback run their sessions here too (`run_in_pod`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from nsinspect.proto import agent_pb2
from nsinspect.proto import exec_pb2 as pb
from nsinspect.proto import exec_pb2_grpc as pb_grpc
from nsinspect.proto.rpcerror import rpc_status

from .. import tty
from ..agentclient import explain, open_channel
from ..context import Context
from ..errors import EXIT_USAGE, CliError
from ..target import reach

EXIT_SIGNAL_BASE = 128
CHUNK = 64 * 1024
QUEUE = 32
FORWARDED = {signal.SIGINT: pb.SIGNAL_INT, signal.SIGTERM: pb.SIGNAL_TERM}


@dataclass(frozen=True)
class RemoteCommand:
    """What to run in the pod and how: exec's flags (debug makes one for its session)."""

    argv: tuple[str, ...]
    container: str = ""  # "": the pod's first container
    namespaces: tuple[str, ...] = ()  # --ns, each comma-separated; none: all the container has
    tools: bool = False
    stdin: bool = False
    tty: bool = False
    user: int | None = None
    group: int | None = None
    privileged: bool = False
    env: tuple[str, ...] = ()  # NAME=VALUE
    workdir: str = ""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RemoteCommand:
        return cls(tuple(args.command), args.container, tuple(args.ns), args.tools, args.stdin, args.tty, args.user,
                   args.group, args.privileged, tuple(args.env), args.workdir)


def _exec_start(ctx: Context, command: RemoteCommand, use_tty: bool) -> pb.ExecStart:
    env = {}
    for pair in command.env:
        name, sep, value = pair.partition("=")
        if not (sep and name):
            raise CliError(f"--env wants NAME=VALUE, not {pair!r}", exit_code=EXIT_USAGE)
        env[name] = value
    if use_tty and "TERM" in os.environ:
        env.setdefault("TERM", os.environ["TERM"])
    start = pb.ExecStart(  # the pod's namespace is known once the agent is reached
        pod=agent_pb2.PodRef(name=ctx.pod, uid=ctx.uid), container=command.container,
        namespaces=[n.strip() for item in command.namespaces for n in item.split(",") if n.strip()],
        argv=command.argv, tty=use_tty, stdin=command.stdin, tools=command.tools, privileged=command.privileged,
        env=env, workdir=command.workdir)
    if command.user is not None:
        start.user = command.user
    if command.group is not None:
        start.group = command.group
    if use_tty and (size := tty.size(sys.stdout.fileno()) or tty.size(sys.stdin.fileno())):
        start.size.rows, start.size.cols = size
    return start


def run_exec(ctx: Context, args: argparse.Namespace) -> int:
    return run_in_pod(ctx, RemoteCommand.from_args(args))


def run_in_pod(ctx: Context, command: RemoteCommand) -> int:
    """Run `command` in ctx.pod through its node's agent; its exit code (128+N for signal N)."""
    if not command.argv:
        raise CliError("a command is required: nsinspect exec POD [flags] -- CMD [ARGS...]", exit_code=EXIT_USAGE)
    use_tty = command.tty
    if use_tty and not os.isatty(sys.stdin.fileno()):
        print("Unable to use a TTY - input is not a terminal", file=sys.stderr)
        use_tty = False
    start = _exec_start(ctx, command, use_tty)
    with reach(ctx) as agent:
        start.pod.namespace = agent.ref.namespace
        with open_channel(agent.address, agent.credentials) as channel:
            return ExecStream(channel, start, command.stdin, use_tty, ctx.timeout).run(agent.where)


class ExecStream:
    """The client side of one Exec stream: a request queue fed by stdin, resizes and signals;
    responses to our stdio."""

    def __init__(self, channel: grpc.Channel, start: pb.ExecStart, stdin: bool, use_tty: bool,
                 timeout: float) -> None:
        self.start = start
        self.stdin = stdin
        self.tty = use_tty
        self.timeout = timeout
        # Bounded: stdin is read no faster than gRPC sends it, however big the input.
        self.requests: queue.Queue[pb.ExecRequest] = queue.Queue(maxsize=QUEUE)
        self.requests.put(pb.ExecRequest(start=start))
        self.done = threading.Event()
        self.call: Any = pb_grpc.ExecStub(channel).Exec(self._requests())
        self.started = threading.Event()
        self.timed_out = False
        self.interrupts = 0
        self.size = (start.size.rows, start.size.cols)
        self.size_lock = threading.Lock()

    def _requests(self) -> Iterator[pb.ExecRequest]:
        while not self.done.is_set():
            with contextlib.suppress(queue.Empty):
                yield self.requests.get(timeout=0.2)

    def _control(self, request: pb.ExecRequest) -> None:
        """A resize or signal: never blocks for long (the queue may be full of stdin nobody reads)."""
        with contextlib.suppress(queue.Full):
            self.requests.put(request, timeout=0.5)

    def _give_up_unless_started(self) -> None:
        if not self.started.is_set():
            self.timed_out = True
            self.call.cancel()

    def _pump_stdin(self) -> None:
        fd = sys.stdin.fileno()
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:
                data = b""
            if not data:
                self.requests.put(pb.ExecRequest(close_stdin=True))
                return
            if self.tty:
                self._resized()  # typed after a resize: SIGWINCH's handler may not have run yet
            self.requests.put(pb.ExecRequest(stdin=data))

    def _resized(self) -> None:
        """Send the terminal's size if it changed (from SIGWINCH, and before each input)."""
        size = tty.size(sys.stdout.fileno()) or tty.size(sys.stdin.fileno())
        with self.size_lock:
            if not size or size == self.size:
                return
            self.size = size
        self._control(pb.ExecRequest(resize=pb.TerminalSize(rows=size[0], cols=size[1])))

    def _forward(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts >= 3:
                self.call.cancel()  # the agent kills the session
                return
        self._control(pb.ExecRequest(signal=FORWARDED[signal.Signals(signum)]))

    def run(self, where: str) -> int:
        timer = threading.Timer(self.timeout, self._give_up_unless_started)
        timer.daemon = True
        timer.start()
        result: pb.ExecExit | None = None
        with contextlib.ExitStack() as stack:
            if self.tty:
                stack.enter_context(tty.raw(sys.stdin.fileno()))
                stack.enter_context(tty.on_resize(self._resized))
            else:
                for sig in FORWARDED:
                    stack.callback(signal.signal, sig, signal.signal(sig, self._forward))
            stack.callback(self.done.set)
            try:
                for resp in self.call:
                    kind = resp.WhichOneof("msg")
                    if kind == "started":
                        self.started.set()
                        timer.cancel()
                        if self.stdin:
                            threading.Thread(target=self._pump_stdin, daemon=True, name="stdin").start()
                    elif kind == "stdout":
                        _write_to_fd(sys.stdout.fileno(), resp.stdout)
                    elif kind == "stderr":
                        _write_to_fd(sys.stderr.fileno(), resp.stderr)
                    elif kind == "exit":
                        result = resp.exit
            except grpc.RpcError as err:
                if self.timed_out:
                    raise CliError(f"{where} did not start the command within {self.timeout:g} s") from None
                if self.interrupts >= 3:
                    return EXIT_SIGNAL_BASE + signal.SIGINT
                code, details = rpc_status(err)
                if self.started.is_set() and code == grpc.StatusCode.UNAVAILABLE:
                    raise CliError(f"lost {where} during the session ({details}): the command's "
                                   "exit status is unknown; the agent ends its processes when it stops or "
                                   "starts again") from None
                raise explain(err, where) from None
            finally:
                timer.cancel()
        if result is None:
            raise CliError("the session ended without an exit status")
        if result.error:
            print(f"error: {result.error}", file=sys.stderr)
        return EXIT_SIGNAL_BASE + result.signal if result.signal else result.code


def _write_to_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
