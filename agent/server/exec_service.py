"""nsinspect.v1.Exec: run a command in a pod container's namespaces, with nsenter semantics.

The fallback when ephemeral containers are disabled or forbidden: nothing in the pod spec changes,
and nothing the session started survives it. The gRPC thread never enters a namespace; it checks
the request, resolves the target, and pumps bytes between the stream and the session's pipes (or
pty) while the helper (agent/enter/helper.py) does the entering. Output is read only as fast as gRPC
sends it (one message of at most 1 MiB in flight per session, the pipe's 1 MiB behind it), so a
slow client makes the command block on write instead of growing the agent's memory; stdin is
written only as fast as the command reads it, and gRPC's flow control holds back the client.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import queue
import select
import signal
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import grpc

from nsinspect.proto import exec_pb2 as pb
from nsinspect.proto import exec_pb2_grpc as pb_grpc

from ..core import validate
from ..core.errors import (
    CallerGone,
    InvalidArgument,
    NotFound,
    NotRunning,
    NsinspectError,
    PermissionDenied,
    Unconfinable,
)
from ..core.model import ContainerInfo, PodInfo, PodRef
from ..enter.helper import PLAN_MAX, Plan
from ..enter.sessions import Cgroup, ForkServer, Launcher, Session, Sessions, Spawner
from ..linux.helperwire import MSG_MAX
from ..resolve.fallback import Resolver
from .admission import GRACE, refused, waiting_on_caller
from .app import _errors
from .audit import AuditRecord, environment, target
from .auth import Guard, exec_elevation
from .status import status_of

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["Exec"].full_name
SIGNALS = {pb.SIGNAL_INT: signal.SIGINT, pb.SIGNAL_TERM: signal.SIGTERM, pb.SIGNAL_KILL: signal.SIGKILL}
MAX_ARGS_BYTES = 128 * 1024
MAX_PLAN_TEXT = MSG_MAX - 8192  # argv, env and paths as JSON: the plan is one message to the helper
DRAIN_AFTER_EXIT = 1.0
FIRST_MESSAGE_WITHIN = 5.0  # a client sends `start` as it opens the stream; a pending stream holds a worker
BULK_GAP, LINGER = 0.002, 0.001  # output that follows output this closely waits LINGER to batch up
RECENT_TTL, RECENT_SIZE = 10.0, 1024  # resolved targets reused (checked by the helper, see _target)

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


class HelperError(NsinspectError):
    """What the helper reported, with the status code it named."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.status = grpc.StatusCode[code] if code in grpc.StatusCode.__members__ else grpc.StatusCode.INTERNAL


class NoToolbox(NsinspectError):
    """Tools mode was asked for, and this agent has no toolbox."""

    status = grpc.StatusCode.FAILED_PRECONDITION


@dataclass(frozen=True)
class ExecConfig:
    toolbox: str = ""
    idle_timeout: float = 0.0  # seconds without input or output; 0: never
    start_timeout: float = 10.0
    join: str = "auto"


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


def _confinement(start: pb.ExecStart) -> str:
    """How much of the container's confinement the command must get (enter.Plan.confine): all of it
    as the container runs; what can be reproduced when the caller asked for nsenter semantics
    (elevated, so holding pods/nsenter); none of it for --privileged, the agent's own powers."""
    if start.privileged:
        return "none"
    return "best" if exec_elevation(start) else "strict"


def _start(requests: Iterator[pb.ExecRequest], context: grpc.ServicerContext, guard: Guard,
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


def _pick(pod: PodInfo, name: str) -> ContainerInfo | None:
    if name:
        return pod.container(name)
    running = [c for c in pod.containers if c.state == "running"]
    return min(running, key=lambda c: c.created_at) if running else None


class ExecService(pb_grpc.ExecServicer):
    name = SERVICE

    def __init__(self, resolver: Resolver, sessions: Sessions, guard: Guard, config: ExecConfig) -> None:
        self.resolver = resolver
        self.sessions = sessions
        self.guard = guard
        self.audit = guard.audit
        self.config = config
        self._lock = threading.Lock()
        self._recent: OrderedDict[tuple[PodRef, str], tuple[float, PodInfo, ContainerInfo]] = OrderedDict()

    @classmethod
    def from_args(cls, resolver: Resolver, args: argparse.Namespace, guard: Guard) -> ExecService:
        """The service as `nsinspect-agent` flags configure it; cleaned up when the agent exits."""
        if args.toolbox and not os.path.isdir(args.toolbox):
            raise SystemExit(f"nsinspect-agent: --toolbox {args.toolbox}: not a directory")
        problem = guard.pending.limits.problem(args.max_workers, args.max_sessions)  # agent/server/admission.py
        if problem:
            raise SystemExit(f"nsinspect-agent: {problem}")
        cgroup = Cgroup.create()
        path = str(cgroup.path) if cgroup is not None else ""
        tools = os.path.abspath(args.toolbox) if args.toolbox else ""
        if not os.access(args.reaper, os.X_OK):
            log.warning("no session reaper: exec sessions are refused until it is built (hack/setup)",
                        extra={"reaper": args.reaper})
        launcher: Launcher = (ForkServer(path, tools, args.reaper) if args.exec_helper == "forkserver"
                              else Spawner(path, args.reaper))
        service = cls(resolver, Sessions(launcher, cgroup, args.max_sessions), guard,
                      ExecConfig(toolbox=os.path.abspath(args.toolbox) if args.toolbox else "",
                                 idle_timeout=args.idle_timeout))
        atexit.register(service.close)
        return service

    def register(self, server: grpc.Server) -> None:
        pb_grpc.add_ExecServicer_to_server(self, server)

    def close(self) -> None:
        self.sessions.close()
        self.audit.close()

    def _target(self, ref: PodRef, name: str, fresh: bool = False) -> tuple[PodInfo, ContainerInfo]:
        """The container to enter. Recent answers are reused: a stale one cannot mislead, because the
        helper checks the PID's start time and reports the process gone, and then we ask afresh."""
        key, now = (ref, name), time.monotonic()
        with self._lock:
            hit = None if fresh else self._recent.get(key)
        if hit is not None and now - hit[0] < RECENT_TTL:
            return hit[1], hit[2]
        pod = self.resolver.resolve(ref, fresh)
        if name and pod.container(name) is None and not fresh:
            pod = self.resolver.resolve(ref, fresh=True)  # added since the resolver cached it?
        found = _pick(pod, name)
        where = f"pod {pod.namespace}/{pod.name}"
        if found is None:
            if name:
                raise NotFound(f'container "{name}" not found in {where}')
            raise NotRunning(f"{where} has no running container")
        if found.state != "running" or not found.pid:
            raise NotRunning(f'container "{found.name}" of {where} is not running (state: {found.state})')
        with self._lock:
            self._recent[key] = (now, pod, found)
            self._recent.move_to_end(key)
            while len(self._recent) > RECENT_SIZE:
                self._recent.popitem(last=False)
        return pod, found

    @_errors
    def Exec(self, request_iterator: Iterator[pb.ExecRequest],
             context: grpc.ServicerContext) -> Iterator[pb.ExecResponse]:
        start, ref, name, namespaces = _start(request_iterator, context, self.guard, self.config)
        caller = self.guard.pod(context, "Exec", ref, exec_elevation(start))  # before anything is looked up
        pod, container = self._target(ref, name)
        record = AuditRecord(
            session=uuid.uuid4().hex[:12], caller=caller.user, pod=target(pod), container=container.name,
            namespaces=list(namespaces) or ["all"], argv=list(start.argv), tty=start.tty, stdin=start.stdin,
            tools=start.tools, privileged=start.privileged,
            user=start.user if start.HasField("user") else None,
            group=start.group if start.HasField("group") else None, workdir=start.workdir, root=start.root,
            env=environment(start.env))
        self.audit.started(record)
        status = "CANCELLED"
        try:
            retried, confinement = False, _confinement(start)
            while True:
                plan = self._plan(start, namespaces, container, confinement)
                size = (start.size.rows, start.size.cols) if start.size.rows and start.size.cols else None
                with self.sessions.open(plan, start.stdin, size, record.session) as session:
                    context.add_callback(session.cancel)
                    session.wait_started(self.config.start_timeout)
                    if session.error is not None:
                        if session.error.get("gone") and not retried:
                            retried = True
                            pod, container = self._target(ref, name, fresh=True)
                            continue  # the container restarted between resolution and entry: once more
                        if session.error.get("unconfined") and confinement == "strict":
                            self._may_go_unconfined(context, ref, str(session.error.get("message")))
                            confinement = "best"
                            continue  # the caller has nsenter semantics: what can be reproduced will do
                        raise HelperError(str(session.error.get("code")), str(session.error.get("message")))
                    if session.unconfined:
                        log.warning("exec session without all of its container's confinement",
                                    extra={"session": session.id, "missing": session.unconfined})
                    record.namespaces = list(session.namespaces)
                    record.confined, record.unconfined = session.confined, session.unconfined
                    yield pb.ExecResponse(started=pb.ExecStarted(
                        session=session.id, container=container.name, namespaces=session.namespaces,
                        tools=start.tools))
                    threading.Thread(target=_feed, args=(session, request_iterator), daemon=True,
                                     name=f"exec-{session.id}").start()
                    final = yield from self._pump(session, context)
                    record.bytes_in, record.bytes_out = session.bytes_in, session.bytes_out
                    if final is None:  # cancelled, or the client went away: nobody to tell
                        return
                    record.exit_code, record.signal, record.error = final.code, final.signal, final.error
                    yield pb.ExecResponse(exit=final)
                    status = "OK"
                    return
        except NsinspectError as err:
            status, record.error = status_of(err).name, str(err)
            raise
        except Exception as err:
            status, record.error = "INTERNAL", str(err)
            raise
        finally:
            record.status = status
            self.audit.ended(record)

    def _may_go_unconfined(self, context: grpc.ServicerContext, ref: PodRef, why: str) -> None:
        """The container's confinement cannot be reproduced here: only a caller who may have
        nsenter semantics (pods/nsenter) gets the session anyway."""
        try:
            self.guard.pod(context, "Exec", ref, f"unconfined ({why})")
        except PermissionDenied as err:
            raise Unconfinable(f"{why}; running the command without it needs nsenter semantics: {err}") from None

    def _plan(self, start: pb.ExecStart, namespaces: tuple[str, ...], container: ContainerInfo,
              confinement: str) -> Plan:
        bundle = self.resolver.proc.store.find(container.id)
        base = bundle.env if bundle is not None else None
        if base is not None and len(json.dumps(base)) > PLAN_MAX - MAX_PLAN_TEXT - 4096:
            log.warning("the container's environment is too large to pass on: the command gets its process's",
                        extra={"container": container.id, "variables": len(base)})
            base = None
        return Plan(confine=confinement, pid=container.pid, start_time=container.start_time, argv=tuple(start.argv),
                    base_env=base,
                    namespaces=namespaces, tty=start.tty, tools=start.tools,
                    toolbox=self.config.toolbox if start.tools else "",
                    user=start.user if start.HasField("user") else None,
                    group=start.group if start.HasField("group") else None,
                    privileged=start.privileged, env=tuple(sorted(start.env.items())),
                    workdir=start.workdir, root=start.root, join=self.config.join)

    def _pump(self, session: Session,
              context: grpc.ServicerContext) -> Generator[pb.ExecResponse, None, pb.ExecExit | None]:
        """Output to the client until the command has exited and its output is drained; the exit to
        send, or None when the call was cancelled."""
        poller = select.poll()
        for fd in (*session.outputs, session.status.fileno(), session.wake_fd):
            poller.register(fd, select.POLLIN)
        outputs = dict(session.outputs)
        last_data: dict[int, float] = {}
        idle, ended_by_agent = self.config.idle_timeout, ""
        drain_until = 0.0
        while True:
            now = time.monotonic()
            if session.exit is not None or session.helper_gone:
                if not drain_until:
                    session.kill()  # anything left that could hold the pipes open
                    drain_until = now + DRAIN_AFTER_EXIT
                if not outputs or now >= drain_until:
                    break
                timeout: float | None = drain_until - now
            elif idle and not ended_by_agent:
                timeout = max(0.0, session.last_activity + idle - now)
            else:
                timeout = None
            events = poller.poll(None if timeout is None else int(timeout * 1000) + 1)
            if not context.is_active():
                return None
            if not events and idle and not ended_by_agent and time.monotonic() - session.last_activity >= idle:
                ended_by_agent = f"no input or output for {idle:g} s: the agent ended the session (--idle-timeout)"
                session.kill()
            for fd, _ in events:
                if fd == session.wake_fd:
                    return None
                if fd == session.status.fileno():
                    session.read_status()
                    if session.helper_gone:
                        poller.unregister(fd)
                elif fd in outputs:
                    bulk = time.monotonic() - last_data.get(fd, 0.0) < BULK_GAP  # data came just now too
                    data = session.read_output(fd, LINGER if bulk else 0.0)
                    if data is None:
                        continue
                    if not data:
                        poller.unregister(fd)
                        del outputs[fd]
                        continue
                    last_data[fd] = time.monotonic()
                    if outputs[fd] == "stdout":
                        yield pb.ExecResponse(stdout=data)
                    else:
                        yield pb.ExecResponse(stderr=data)
        if session.exit is None:
            return pb.ExecExit(code=-1, error=ended_by_agent or "the exec helper ended without an exit status")
        code, sig = session.exit
        return pb.ExecExit(code=code, signal=sig, error=ended_by_agent or session.exec_error)


def _feed(session: Session, requests: Iterator[pb.ExecRequest]) -> None:
    """The client's side of the stream: stdin, resizes and signals, until it closes or the call ends."""
    try:
        for req in requests:
            kind = req.WhichOneof("msg")
            if kind == "stdin":
                session.write_stdin(req.stdin)
            elif kind == "close_stdin":
                session.close_stdin()
            elif kind == "resize":
                session.resize(req.resize.rows, req.resize.cols)
            elif kind == "signal" and req.signal in SIGNALS:
                session.signal(SIGNALS[req.signal])
    except Exception as err:  # the call ended (cancelled): nothing more to read
        log.debug("exec input ended", extra={"session": session.id, "error": str(err)})
        return
    if not session.plan.tty:
        session.close_stdin()  # the client is done sending
