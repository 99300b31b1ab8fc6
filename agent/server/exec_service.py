"""nsinspect.v1.Exec: run a command in a pod container's namespaces, with nsenter semantics.

The fallback when ephemeral containers are disabled or forbidden: nothing in the pod spec changes,
and nothing the session started survives it. The gRPC thread never enters a namespace; it checks
the request (exec_checks.py), resolves the target, and pumps bytes between the stream and the
session's pipes or pty (exec_pump.py) while the helper (agent/enter/forkserver.py) does the
entering. A session that cannot start fails with what the enterer reported (exec_failure.py); a
process gone (the container restarted) is resolved once more, and a confinement that cannot be
reproduced here is waived only for a caller who may have nsenter semantics.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator

import grpc

from nsinspect.proto import exec_pb2 as pb
from nsinspect.proto import exec_pb2_grpc as pb_grpc

from ..core.errors import NotFound, NotRunning, NsinspectError, PermissionDenied, Unconfinable
from ..core.model import ContainerInfo, PodInfo, PodRef
from ..core.plan import PLAN_MAX, Plan
from ..enter.cgroup import Cgroup
from ..enter.launchers import ForkServer, Launcher, Spawner
from ..enter.sessions import Sessions
from ..resolve.fallback import Resolver
from .audit import AuditRecord, environment, target
from .auth.guard import Guard
from .auth.policy import exec_elevation
from .exec_checks import MAX_PLAN_TEXT, ExecConfig, confinement_mode, read_start
from .exec_failure import session_failure
from .exec_pump import feed_input, pump_output
from .status import answers_errors as _errors
from .status import status_of

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["Exec"].full_name
RECENT_TTL, RECENT_SIZE = 10.0, 1024  # resolved targets reused (checked by the helper, see _target)

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
        start, ref, name, namespaces = read_start(request_iterator, context, self.guard, self.config)
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
            retried, confinement = False, confinement_mode(start)
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
                        raise session_failure(session.error)
                    if session.unconfined:
                        log.warning("exec session without all of its container's confinement",
                                    extra={"session": session.id, "missing": session.unconfined})
                    record.namespaces = list(session.namespaces)
                    record.confined, record.unconfined = session.confined, session.unconfined
                    yield pb.ExecResponse(started=pb.ExecStarted(
                        session=session.id, container=container.name, namespaces=session.namespaces,
                        tools=start.tools))
                    threading.Thread(target=feed_input, args=(session, request_iterator), daemon=True,
                                     name=f"exec-{session.id}").start()
                    final = yield from pump_output(session, context, self.config.idle_timeout)
                    record.bytes_in, record.bytes_out = session.stdio.bytes_in, session.stdio.bytes_out
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
