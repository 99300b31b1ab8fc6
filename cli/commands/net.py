"""`nsinspect net POD`: the pod's links, addresses, routes and sockets, with the processes holding them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from nsinspect.proto import observe_pb2 as pb
from nsinspect.proto import observe_pb2_grpc as pb_grpc

from .. import render
from ..context import Context
from ..errors import EXIT_OK
from ..render import printable
from ..target import call


def run_net(ctx: Context, args: argparse.Namespace) -> int:
    resp = call(ctx, pb_grpc.ObserveStub, "NetInfo", lambda agent: pb.NetInfoRequest(pod=agent.ref))
    render.write(resp, ctx.output, lambda: net_text(resp, wide=ctx.wide))
    return EXIT_OK


def _endpoint(address: str, port: int, family: int) -> str:
    shown = "*" if address in ("0.0.0.0", "::") else f"[{address}]" if family == 6 else address
    return f"{shown}:{port or '*'}"


def _socket_owners(s: pb.Socket, wide: bool) -> tuple[str, str, str]:
    if not s.owners:
        return "-", "-", "-"
    pids = ",".join(str(o.pid) for o in s.owners)
    where = ",".join(sorted({"(sandbox)" if o.sandbox else "(outside)" if o.outside else o.container
                             for o in s.owners}))
    comms = ",".join(sorted({printable(o.comm) for o in s.owners}))
    return (pids if wide or len(pids) <= 20 else pids[:17] + "..."), where, comms


def net_text(resp: pb.NetInfoResponse, wide: bool = False) -> str:
    pod = resp.pod
    if resp.host_network:
        return (f"Pod {pod.namespace}/{pod.name} uses the node's network namespace (hostNetwork): it has no network "
                f"of its own to show. Look at the node's with ip and ss.\n")
    out = [f"Pod {pod.namespace}/{pod.name}  net:[{resp.namespace.ino}]  node {resp.node_name or '?'}\n\n"]
    addresses: dict[str, list[str]] = {}
    for a in resp.addresses:
        if wide or a.scope != "link":
            addresses.setdefault(a.link, []).append(f"{a.address}/{a.prefix_len}")
    rows: list[Sequence[str]] = [("LINK", "STATE", "MTU", "MAC", "ADDRESSES", *(("KIND", "FLAGS") if wide else ()))]
    rows += [(printable(x.name), x.state, str(x.mtu), x.mac or "-", " ".join(addresses.get(x.name, [])) or "-",
              *((x.kind or "-", ",".join(x.flags)) if wide else ())) for x in resp.links]
    out.append(render.table(rows))

    routes = [r for r in resp.routes if wide or (r.table == 254 and r.destination != "fe80::/64")]
    if routes:
        rows = [("ROUTE", "VIA", "DEV", "SRC", "PROTO", *(("SCOPE", "METRIC", "TABLE", "TYPE") if wide else ()))]
        rows += [(r.destination, r.gateway or "-", r.link or "-", r.source or "-", r.protocol,
                  *((r.scope, str(r.metric), str(r.table), r.type) if wide else ())) for r in routes]
        out.append("\n" + render.table(rows))

    if resp.sockets:
        rows = [("PROTO", "STATE", "LOCAL", "REMOTE", "PID", "CONTAINER", "COMMAND",
                 *(("INODE", "UID") if wide else ()))]
        for s in resp.sockets:
            pids, where, comms = _socket_owners(s, wide)
            rows.append((f"{s.protocol}{'6' if s.family == 6 else ''}", s.state,
                         _endpoint(s.local_address, s.local_port, s.family),
                         _endpoint(s.remote_address, s.remote_port, s.family), pids, where, comms,
                         *((str(s.inode), str(s.uid)) if wide else ())))
        out.append("\n" + render.table(rows))
    else:
        out.append("\nno listening or established TCP/UDP sockets\n")
    out += [f"warning: {w}\n" for w in resp.warnings]
    return "".join(out)
