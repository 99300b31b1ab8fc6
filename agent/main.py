"""`nsinspect-agent`: wire the resolvers to the gRPC server (and, if asked, the metrics endpoint)
and run until SIGTERM."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .enter.spawn import default_reaper
from .procfs import procns
from .resolve.cri import CriClient, find_endpoint
from .resolve.cri_source import CriResolver
from .resolve.fallback import Resolver
from .resolve.proc_source import DEFAULT_STATE_DIRS, ProcResolver
from .server import admission
from .server.agent_service import AgentService
from .server.app import Service, build_server
from .server.audit import AuditLog
from .server.auth import config as auth_config
from .server.auth.guard import Guard
from .server.exec_service import ExecService
from .server.metrics import Metrics
from .server.metrics_endpoint import listen_flag, serve_metrics
from .server.metrics_interceptor import MetricsInterceptor
from .server.observe_service import ObserveService

log = logging.getLogger("nsinspect.agent")
_STD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any `extra=` fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname.lower(),
                 "logger": record.name, "msg": record.getMessage()}
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nsinspect-agent", description="The nsinspect node agent (runs as root).")
    p.add_argument("--listen", action="append", metavar="ADDR",
                   help="unix:///path or tcp://host:port; repeatable (default unix:///run/nsinspect/agent.sock)")
    p.add_argument("--cri-endpoint", default=os.environ.get("NSINSPECT_CRI_ENDPOINT"),
                   help="CRI socket (default: $NSINSPECT_CRI_ENDPOINT, else the first standard socket found)")
    p.add_argument("--cri-timeout", type=float, default=1.0, metavar="SECONDS")
    p.add_argument("--runtime-state-dir", action="append", type=Path, metavar="DIR",
                   help="runtime state dir for the /proc fallback (containerd's root of task bundles); repeatable")
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME", os.uname().nodename))
    p.add_argument("--max-workers", type=int, default=16, metavar="N",
                   help="gRPC worker threads; at least --max-sessions + --max-pending-streams + "
                        f"{admission.RESERVED_WORKERS}, kept for health checks and short calls (default 16)")
    p.add_argument("--cpu-sample-ms", type=int, default=250, metavar="MS",
                   help="how long ListProcesses samples CPU use when the request does not say (0: lifetime averages)")
    # exec (agent/server/exec_service.py)
    p.add_argument("--toolbox", metavar="DIR", default="",
                   help="root filesystem of tools for `exec --tools` (e.g. bin/busybox and its applets)")
    p.add_argument("--reaper", metavar="FILE", default=default_reaper(),
                   help="the session reaper, a static program built from agent/enter/reaper.c (default: "
                        "$NSINSPECT_REAPER, else libexec/nsinspect-reaper of the agent's Python prefix)")
    p.add_argument("--max-sessions", type=int, default=8, metavar="N",
                   help="concurrent exec sessions; more are refused with RESOURCE_EXHAUSTED (default 8)")
    p.add_argument("--idle-timeout", type=float, default=0.0, metavar="SECONDS",
                   help="end exec sessions without input or output for this long (default 0: never)")
    admission.add_flags(p)  # streams that hold a worker before they are authorized: agent/server/admission.py
    p.add_argument("--audit-log", default="-", metavar="FILE",
                   help="audit log, JSON lines: every call admitted or refused, every exec session (default -: stdout)")
    p.add_argument("--exec-helper", choices=("forkserver", "spawn"), default="forkserver",
                   help="enter namespaces from a helper started once (default) or one spawned per session")
    auth_config.add_flags(p)  # who may call: agent/server/auth/
    p.add_argument("--metrics-listen", type=listen_flag, default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics, loopback addresses only; "
                        "port 0: any free one (default: off)")
    p.add_argument("--log-format", choices=("json", "text"), default="json")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p.parse_args(argv)


def services(resolver: Resolver, args: argparse.Namespace, guard: Guard, counters: Metrics) -> list[Service]:
    """Every gRPC service the agent serves; each feature adds its own here. Each handler asks
    `guard` (agent/server/auth/guard.py) whether its caller may do this to its target."""
    exec_service = ExecService.from_args(resolver, args, guard)
    counters.count_sessions(lambda: len(exec_service.sessions))
    return [AgentService(resolver, guard, args.node_name),
            ObserveService(resolver, guard, args.node_name, args.cpu_sample_ms),
            exec_service]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Requests are mostly short syscalls (each lets go of the interpreter lock) between bits of
    # Python; at the default 5 ms a request waits behind every other thread's slice after each one.
    sys.setswitchinterval(0.0005)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if args.log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])

    if not procns.in_host_pid_namespace():
        log.error("the agent must run in the node's pid namespace (hostPID: true); refusing to start")
        return 1
    endpoint = find_endpoint(args.cri_endpoint)
    cri = CriResolver(CriClient(endpoint, timeout=args.cri_timeout)) if endpoint else None
    state_dirs = args.runtime_state_dir or list(DEFAULT_STATE_DIRS)
    counters = Metrics()
    resolver = Resolver(cri, ProcResolver(state_dirs), counts=counters)
    try:
        security = auth_config.Security.from_args(args, AuditLog(args.audit_log), counters)
    except auth_config.ConfigError as err:
        log.error("cannot set up authentication", extra={"error": str(err)})
        return 1
    try:
        server, bound = build_server(services(resolver, args, security.guard, counters),
                                     args.listen or ["unix:///run/nsinspect/agent.sock"], args.max_workers,
                                     # outermost first: the metrics count what auth refuses, with its code
                                     interceptors=[MetricsInterceptor(counters), security.interceptor],
                                     tls=security.tls)
    except (ValueError, RuntimeError) as err:
        log.error("cannot listen", extra={"error": str(err)})
        return 1
    try:
        endpoint_of_metrics = serve_metrics(counters, args.metrics_listen) if args.metrics_listen else None
    except (ValueError, OSError) as err:
        log.error("cannot serve metrics", extra={"error": str(err)})
        return 1

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    log.info("agent serving", extra={"listen": bound, "cri_endpoint": endpoint or "", "node": args.node_name,
                                     "state_dirs": [str(d) for d in state_dirs],
                                     "api_server": security.api_server or "none: only unix-socket callers (root)",
                                     "audience": args.audience, "mtls": security.tls is not None,
                                     "metrics": endpoint_of_metrics.url if endpoint_of_metrics else "off"})
    stop.wait()
    log.info("agent stopping")
    server.stop(grace=2).wait()
    if endpoint_of_metrics is not None:
        endpoint_of_metrics.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
