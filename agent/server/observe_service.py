"""The gRPC face of processes.py and network.py: nsinspect.v1.Observe (ListProcesses, NetInfo)."""

from __future__ import annotations

import grpc

from nsinspect.proto import observe_pb2 as pb
from nsinspect.proto import observe_pb2_grpc as pb_grpc

from ..core import validate
from ..core.errors import InvalidArgument
from ..observe.network import NetInfo, NetInspector
from ..observe.outsiders import OutsiderScan, WalkHelper
from ..observe.processes import ProcessFacts, ProcessList, ProcessLister
from ..resolve.fallback import Resolver
from . import wire
from .app import _errors
from .auth import Guard

SERVICE = pb.DESCRIPTOR.services_by_name["Observe"].full_name
MAX_CPU_SAMPLE_MS = 10_000  # a request holds a worker thread for this long


class ObserveService(pb_grpc.ObserveServicer):
    name = SERVICE

    def __init__(self, resolver: Resolver, guard: Guard, node_name: str = "", cpu_sample_ms: int = 250) -> None:
        self.guard = guard
        self.lister = ProcessLister(resolver, outsiders=OutsiderScan(WalkHelper()))  # node walks off our GIL
        self.net = NetInspector(self.lister)
        self.node_name = node_name
        self.cpu_sample_ms = cpu_sample_ms

    def register(self, server: grpc.Server) -> None:
        pb_grpc.add_ObserveServicer_to_server(self, server)

    @_errors
    def ListProcesses(self, request: pb.ListProcessesRequest,
                      context: grpc.ServicerContext) -> pb.ListProcessesResponse:
        ref = validate.pod_ref(request.pod.namespace, request.pod.name, request.pod.uid)
        container = validate.container_name(request.container)
        sample = request.cpu_sample_ms if request.HasField("cpu_sample_ms") else self.cpu_sample_ms
        if sample > MAX_CPU_SAMPLE_MS:
            raise InvalidArgument(f"cpu_sample_ms {sample} is too long: at most {MAX_CPU_SAMPLE_MS}")
        self.guard.pod(context, "ListProcesses", ref)
        return process_list(self.lister.list(ref, container, sample / 1000), self.node_name)

    @_errors
    def NetInfo(self, request: pb.NetInfoRequest, context: grpc.ServicerContext) -> pb.NetInfoResponse:
        ref = validate.pod_ref(request.pod.namespace, request.pod.name, request.pod.uid)
        self.guard.pod(context, "NetInfo", ref)
        return net_info(self.net.net_info(ref), self.node_name)


def process(p: ProcessFacts) -> pb.Process:
    m = p.member
    return pb.Process(
        pid=m.pid, pid_in_pod=p.pid_in_pod, nspid=list(p.nspid), ppid=p.ppid, container=m.container,
        container_id=m.container_id, sandbox=m.sandbox, outside=m.outside, cgroup=p.cgroup,
        joined=list(m.joined), uid=p.uid, gid=p.gid, user=p.user, group=p.group, state=p.state,
        cpu_percent=p.cpu_percent, rss_bytes=p.rss_bytes, threads=p.threads, start_ticks=p.start_ticks,
        start_time=p.start_time, argv=list(p.argv), comm=p.comm, pid_ns=m.pid_ns, net_ns=m.net_ns)


def process_list(result: ProcessList, node_name: str = "") -> pb.ListProcessesResponse:
    return pb.ListProcessesResponse(pod=wire.pod(result.pod, {}, None),
                                    processes=[process(p) for p in result.processes],
                                    cpu_sample_ms=round(result.cpu_sample * 1000), warnings=list(result.warnings),
                                    node_name=node_name)


def net_info(info: NetInfo, node_name: str = "") -> pb.NetInfoResponse:
    resp = pb.NetInfoResponse(pod=wire.pod(info.pod, {}, None), host_network=info.host_network,
                              warnings=list(info.warnings), node_name=node_name)
    if info.namespace is not None:
        resp.namespace.CopyFrom(wire.namespace(info.namespace))
    resp.links.extend(pb.Link(index=x.index, name=x.name, kind=x.kind, state=x.state, flags=list(x.flags), mtu=x.mtu,
                              mac=x.mac) for x in info.links)
    resp.addresses.extend(pb.Address(link=a.link, family=a.family, address=a.address, prefix_len=a.prefix_len,
                                     scope=a.scope) for a in info.addresses)
    resp.routes.extend(pb.Route(family=r.family, destination=r.destination, gateway=r.gateway, link=r.link,
                                source=r.source, protocol=r.protocol, scope=r.scope, metric=r.metric, table=r.table,
                                type=r.type) for r in info.routes)
    resp.sockets.extend(pb.Socket(
        protocol=s.protocol, family=s.family, state=s.state, local_address=s.local_address, local_port=s.local_port,
        remote_address=s.remote_address, remote_port=s.remote_port, inode=s.inode, uid=s.uid,
        owners=[pb.SocketOwner(pid=o.member.pid, container=o.member.container, sandbox=o.member.sandbox,
                               outside=o.member.outside, comm=o.comm) for o in s.owners]) for s in info.sockets)
    return resp
