"""`nsinspect ps POD`: every process of a pod as the node sees it, as a table or a tree per container.
With -l SELECTOR: every matching pod, on every node."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import grpc

from nsinspect.proto import agent_pb2
from nsinspect.proto import observe_pb2 as pb
from nsinspect.proto import observe_pb2_grpc as pb_grpc

from .. import render
from ..context import Context
from ..errors import EXIT_OK, EXIT_USAGE, CliError
from ..render import printable
from ..target import call

OUTSIDE = "(outside)"


def _list_request(args: argparse.Namespace, pod: agent_pb2.PodRef) -> pb.ListProcessesRequest:
    request = pb.ListProcessesRequest(pod=pod, container=args.container)
    if args.cpu_sample is not None:
        request.cpu_sample_ms = round(args.cpu_sample * 1000)
    return request


def run_ps(ctx: Context, args: argparse.Namespace) -> int:
    if args.cpu_sample is not None and not 0 <= args.cpu_sample <= 10:
        raise CliError("--cpu-sample must be between 0 and 10 seconds", exit_code=EXIT_USAGE)
    if args.selector:
        return _list_many(ctx, args)
    resp = call(ctx, pb_grpc.ObserveStub, "ListProcesses", lambda agent: _list_request(args, agent.ref))
    render.write(resp, ctx.output, lambda: _processes_text(resp, ctx.wide, args.tree))
    return EXIT_OK


def _list_many(ctx: Context, args: argparse.Namespace) -> int:
    from .. import fanout  # noqa: PLC0415 - it needs the kubernetes client, slow to import

    def ask(channel: grpc.Channel, pod: Any) -> pb.ListProcessesResponse:
        ref = agent_pb2.PodRef(namespace=pod.metadata.namespace, name=pod.metadata.name)
        return pb_grpc.ObserveStub(channel).ListProcesses(_list_request(args, ref), timeout=ctx.timeout)

    outcomes = fanout.over_pods(ctx, args.selector, args.all_namespaces, args.max_concurrency, ask)
    return fanout.write_all(outcomes, ctx.output, lambda r: _processes_text(r, ctx.wide, args.tree))


def _processes_text(resp: pb.ListProcessesResponse, wide: bool, as_tree: bool) -> str:
    return process_tree(resp, wide) if as_tree else process_table(resp, wide)


# -- rendering ------------------------------------------------------------------------------------
def who(p: pb.Process) -> str:
    return "(sandbox)" if p.sandbox else OUTSIDE if p.outside else p.container or p.container_id[:13]


def command(p: pb.Process, width: int = 0) -> str:
    text = printable(" ".join(p.argv) if p.argv else f"[{p.comm}]")
    if p.state == "zombie":
        text += " <defunct>"
    return text if not width or len(text) <= width else text[:width - 3] + "..."


def _size(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if n >= 10 or unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.0f}"


def _started(t: float, now: float) -> str:
    return time.strftime("%H:%M:%S" if now - t < 86400 else "%Y-%m-%d", time.localtime(t))


def _ident(name: str, number: int, wide: bool) -> str:
    name = printable(name)
    if wide:
        return f"{name}({number})" if name else str(number)
    return name or str(number)


def _heading(resp: pb.ListProcessesResponse) -> str:
    pod = resp.pod
    sample = f"%CPU over {resp.cpu_sample_ms / 1000:g} s" if resp.cpu_sample_ms else "%CPU averaged over each lifetime"
    return (f"Pod {pod.namespace}/{pod.name}  node {resp.node_name or '?'}  {len(resp.processes)} processes  "
            f"{sample}\n")


def _footer(resp: pb.ListProcessesResponse) -> str:
    out = []
    if any(p.outside for p in resp.processes):
        out.append(f"{OUTSIDE}: in no container of the pod; it joined the pod's pid or network namespace "
                   "from elsewhere (nsenter, an exec helper)\n")
    out += [f"warning: {w}\n" for w in resp.warnings]
    return "".join(out)


def process_table(resp: pb.ListProcessesResponse, wide: bool = False) -> str:
    now = time.time()
    if wide:
        rows: list[Sequence[str]] = [("CONTAINER", "PID", "NSPID", "PPID", "USER", "GROUP", "STATE", "%CPU", "RSS",
                                      "THR", "START", "JOINED", "CGROUP", "COMMAND")]
        rows += [(who(p), str(p.pid), "/".join(map(str, p.nspid)), str(p.ppid), _ident(p.user, p.uid, True),
                  _ident(p.group, p.gid, True), p.state, f"{p.cpu_percent:.1f}", _size(p.rss_bytes), str(p.threads),
                  _started(p.start_time, now), ",".join(p.joined) or "-", printable(p.cgroup) or "-", command(p))
                 for p in resp.processes]
    else:
        rows = [("CONTAINER", "PID", "PODPID", "USER", "STATE", "%CPU", "RSS", "START", "COMMAND")]
        rows += [(who(p), str(p.pid), str(p.pid_in_pod or "-"), _ident(p.user, p.uid, False), p.state,
                  f"{p.cpu_percent:.1f}", _size(p.rss_bytes), _started(p.start_time, now), command(p, 60))
                 for p in resp.processes]
    return _heading(resp) + "\n" + render.table(rows) + _footer(resp)


def process_tree(resp: pb.ListProcessesResponse, wide: bool = False) -> str:
    """Parentage within each container (and among the outsiders): roots are processes whose parent
    is not in the same group, e.g. a container's init, whose parent is the runtime's shim."""
    groups: dict[str, list[pb.Process]] = {}
    for p in resp.processes:
        groups.setdefault(who(p), []).append(p)
    out = [_heading(resp)]
    for name, members in groups.items():
        ident = members[0].container_id[:12]
        out.append(f"\n{name}{'  ' + ident if ident else ''}\n")
        pids = {p.pid for p in members}
        children: dict[int, list[pb.Process]] = {}
        for p in members:
            children.setdefault(p.ppid if p.ppid in pids else 0, []).append(p)
        _branches(children, 0, "", wide, out)
    return "".join(out) + "\n" + _footer(resp)


def _branches(children: dict[int, list[pb.Process]], pid: int, prefix: str, wide: bool, out: list[str]) -> None:
    kids = sorted(children.get(pid, []), key=lambda p: p.pid)
    for i, p in enumerate(kids):
        last = i == len(kids) - 1
        branch = "" if pid == 0 else ("└─ " if last else "├─ ")
        joined = f"  [{','.join(p.joined)}]" if p.joined else ""
        out.append(f"  {prefix}{branch}{p.pid} ({p.pid_in_pod or '-'}) {_ident(p.user, p.uid, wide)} "
                   f"{command(p, 0 if wide else 60)}{joined}\n")
        _branches(children, p.pid, prefix + ("" if pid == 0 else "   " if last else "│  "), wide, out)
