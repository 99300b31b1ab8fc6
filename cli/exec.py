"""`nsinspect exec`: run a command in a pod container's namespaces through the node agent.

For clusters where ephemeral containers are disabled or forbidden: nothing in the pod changes.
It behaves like `kubectl exec`: stdout and stderr stay apart (merged with -t, like a terminal),
-i passes stdin, -t puts the local terminal in raw mode and follows its resizes, and the exit
code is the remote command's (128+N when signal N killed it). Without a terminal, SIGINT and
SIGTERM are passed on to the command; a third SIGINT gives up on it and ends the session.
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
from typing import Any

import grpc

from nsinspect.proto import agent_pb2
from nsinspect.proto import exec_pb2 as pb
from nsinspect.proto import exec_pb2_grpc as pb_grpc
from nsinspect.proto.rpcerror import rpc_status

from . import tty
from .agentclient import explain, open_channel
from .errors import EXIT_USAGE, CliError
from .target import reach

EXIT_SIGNAL_BASE = 128
CHUNK = 64 * 1024
QUEUE = 32
FORWARDED = {signal.SIGINT: pb.SIGNAL_INT, signal.SIGTERM: pb.SIGNAL_TERM}


def _start(args: argparse.Namespace, argv: list[str], use_tty: bool) -> pb.ExecStart:
    env = {}
    for pair in args.env:
        name, sep, value = pair.partition("=")
        if not (sep and name):
            raise CliError(f"--env wants NAME=VALUE, not {pair!r}", exit_code=EXIT_USAGE)
        env[name] = value
    if use_tty and "TERM" in os.environ:
        env.setdefault("TERM", os.environ["TERM"])
    start = pb.ExecStart(
        pod=agent_pb2.PodRef(namespace=args.namespace, name=args.pod, uid=args.uid), container=args.container,
        namespaces=[n.strip() for item in args.ns for n in item.split(",") if n.strip()],
        argv=argv, tty=use_tty, stdin=args.stdin, tools=args.tools, privileged=args.privileged,
        env=env, workdir=args.workdir)
    if args.user is not None:
        start.user = args.user
    if args.group is not None:
        start.group = args.group
    if use_tty and (size := tty.size(sys.stdout.fileno()) or tty.size(sys.stdin.fileno())):
        start.size.rows, start.size.cols = size
    return start


def run_exec(args: argparse.Namespace) -> int:
    argv = list(args.command)
    if not argv:
        raise CliError("a command is required: nsinspect exec POD [flags] -- CMD [ARGS...]", exit_code=EXIT_USAGE)
    use_tty = args.tty
    if use_tty and not os.isatty(sys.stdin.fileno()):
        print("Unable to use a TTY - input is not a terminal", file=sys.stderr)
        use_tty = False
    start = _start(args, argv, use_tty)
    with reach(args) as agent:
        start.pod.namespace = args.namespace
        where = args.agent or f"the agent on node {agent.node}"
        with open_channel(agent.address, agent.credentials) as channel:
            return Session(channel, start, args.stdin, use_tty, args.timeout).run(where)


class Session:
    """One exec stream: a request queue fed by stdin, resizes and signals; responses to our stdio."""

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
                        _write(sys.stdout.fileno(), resp.stdout)
                    elif kind == "stderr":
                        _write(sys.stderr.fileno(), resp.stderr)
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


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
