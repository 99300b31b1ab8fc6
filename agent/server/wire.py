"""Model values to and from nsinspect.v1 messages; the only module that knows both shapes
(nsinspect.v1.Agent's messages, and nsinspect.v1.Observe's: processes and networks)."""

from __future__ import annotations

from collections.abc import Iterable

from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import observe_pb2 as opb

from ..core import validate
from ..core.model import (
    ContainerInfo,
    HostInfo,
    NamespaceOptions,
    NodeNamespace,
    PodFacts,
    PodInfo,
    ProcessNamespaces,
    Source,
    Verdict,
)
from ..core.network import NetInfo
from ..core.nsid import NamespaceId
from ..core.process import ProcessFacts, ProcessList
from ..observe.inspect import Inspection

VERDICTS = {Verdict.OK: pb.VERDICT_OK, Verdict.MISMATCH: pb.VERDICT_MISMATCH, Verdict.UNKNOWN: pb.VERDICT_UNKNOWN}
SOURCES = {Source.CRI: pb.SOURCE_CRI, Source.PROC: pb.SOURCE_PROC}


def facts_from_pb(msg: pb.PodFacts) -> PodFacts:
    def opt(field: str) -> bool | None:
        return bool(getattr(msg, field)) if msg.HasField(field) else None  # type: ignore[arg-type]

    return PodFacts(host_network=opt("host_network"), host_pid=opt("host_pid"), host_ipc=opt("host_ipc"),
                    share_process_namespace=opt("share_process_namespace"), host_users=opt("host_users"),
                    target_container_name=validate.target_container_names(msg.target_container_name))


def namespace(ns: NamespaceId) -> pb.Namespace:
    return pb.Namespace(type=ns.type, dev=ns.dev, ino=ns.ino)


def process(p: ProcessNamespaces) -> pb.ProcessNamespaces:
    return pb.ProcessNamespaces(pid=p.pid, start_time=p.start_time, gone=p.gone, error=p.error,
                                namespaces=[namespace(n) for n in p.ids.values()],
                                for_children=[namespace(n) for n in p.for_children.values()])


def options(o: NamespaceOptions | None) -> pb.NamespaceOptions | None:
    return None if o is None else pb.NamespaceOptions(network=o.network, pid=o.pid, ipc=o.ipc, target_id=o.target_id)


def host(h: HostInfo, node_name: str = "") -> pb.Host:
    return pb.Host(process=process(h.namespaces), cgroup_mode=h.cgroup_mode, node_name=node_name)


def _container(c: ContainerInfo, read: ProcessNamespaces | None) -> pb.Container:
    msg = pb.Container(name=c.name, id=c.id, state=c.state, image=c.image, created_at=c.created_at,
                       options=options(c.options))
    msg.process.CopyFrom(process(read) if read else pb.ProcessNamespaces(pid=c.pid, start_time=c.start_time))
    return msg


def pod(p: PodInfo, reads: dict[str, ProcessNamespaces], sandbox_read: ProcessNamespaces | None) -> pb.Pod:
    msg = pb.Pod(namespace=p.namespace, name=p.name, uid=p.uid, source=SOURCES[p.source], runtime=p.runtime,
                 containers=[_container(c, reads.get(c.name)) for c in p.containers])
    if p.sandbox is not None:
        sb = p.sandbox
        msg.sandbox.CopyFrom(pb.Sandbox(id=sb.id, state=sb.state, hostname=sb.hostname, options=options(sb.options)))
        msg.sandbox.process.CopyFrom(process(sandbox_read) if sandbox_read
                                     else pb.ProcessNamespaces(pid=sb.pid, start_time=sb.start_time))
    return msg


def inspection(i: Inspection, node_name: str = "") -> pb.InspectResponse:
    return pb.InspectResponse(
        pod=pod(i.pod, dict(i.reads.containers), i.reads.sandbox),
        host=host(i.host, node_name),
        comparison=[pb.ComparisonRow(container=name, cells=[
            pb.Sharing(type=s.type, private=s.private, host=s.host, sandbox=s.sandbox,
                       containers=list(s.containers), unknown=s.unknown) for s in cells])
            for name, cells in i.comparison.items()],
        verification=[pb.ContainerVerification(container=v.container, verdict=VERDICTS[v.verdict], checks=[
            pb.Check(type=c.type, expected=c.expected, actual=c.actual, verdict=VERDICTS[c.verdict],
                     explanation=c.explanation) for c in v.checks]) for v in i.verification],
        verdict=VERDICTS[i.verdict],
        warnings=list(i.warnings),
    )


def node_map(rows: Iterable[NodeNamespace], h: HostInfo, from_cri: bool, node_name: str = "") -> pb.NodeMapResponse:
    return pb.NodeMapResponse(
        source=pb.SOURCE_CRI if from_cri else pb.SOURCE_PROC,
        host=host(h, node_name),
        namespaces=[pb.NodeNamespace(
            namespace=namespace(r.id), processes=r.processes, lowest_pid=r.lowest_pid, command=r.command,
            owners=[pb.Owner(kind=o.kind, pod_namespace=o.pod_namespace, pod_name=o.pod_name, pod_uid=o.pod_uid,
                             container=o.container, sandbox=o.sandbox) for o in r.owners]) for r in rows],
    )


def _inode(ns: NamespaceId | None) -> int:
    return ns.ino if ns is not None else 0  # the wire's 0: not read


def process_facts(p: ProcessFacts) -> opb.Process:
    m = p.member
    return opb.Process(
        pid=m.pid, pid_in_pod=p.pid_in_pod, nspid=list(p.nspid), ppid=p.ppid, container=m.container,
        container_id=m.container_id, sandbox=m.sandbox, outside=m.outside, cgroup=p.cgroup,
        joined=list(m.joined), uid=p.uid, gid=p.gid, user=p.user, group=p.group, state=p.state,
        cpu_percent=p.cpu_percent, rss_bytes=p.rss_bytes, threads=p.threads, start_ticks=p.start_ticks,
        start_time=p.start_time, argv=list(p.argv), comm=p.comm, pid_ns=_inode(m.pid_ns), net_ns=_inode(m.net_ns))


def process_list(result: ProcessList, node_name: str = "") -> opb.ListProcessesResponse:
    return opb.ListProcessesResponse(pod=pod(result.pod, {}, None),
                                     processes=[process_facts(p) for p in result.processes],
                                     cpu_sample_ms=round(result.cpu_sample * 1000), warnings=list(result.warnings),
                                     node_name=node_name)


def net_info(info: NetInfo, node_name: str = "") -> opb.NetInfoResponse:
    resp = opb.NetInfoResponse(pod=pod(info.pod, {}, None), host_network=info.host_network,
                               warnings=list(info.warnings), node_name=node_name)
    if info.namespace is not None:
        resp.namespace.CopyFrom(namespace(info.namespace))
    resp.links.extend(opb.Link(index=x.index, name=x.name, kind=x.kind, state=x.state, flags=list(x.flags),
                               mtu=x.mtu, mac=x.mac) for x in info.links)
    resp.addresses.extend(opb.Address(link=a.link, family=a.family, address=a.address, prefix_len=a.prefix_len,
                                      scope=a.scope) for a in info.addresses)
    resp.routes.extend(opb.Route(family=r.family, destination=r.destination, gateway=r.gateway, link=r.link,
                                 source=r.source, protocol=r.protocol, scope=r.scope, metric=r.metric,
                                 table=r.table, type=r.type) for r in info.routes)
    resp.sockets.extend(opb.Socket(
        protocol=s.protocol, family=s.family, state=s.state, local_address=s.local_address, local_port=s.local_port,
        remote_address=s.remote_address, remote_port=s.remote_port, inode=s.inode, uid=s.uid,
        owners=[opb.SocketOwner(pid=o.member.pid, container=o.member.container, sandbox=o.member.sandbox,
                                outside=o.member.outside, comm=o.comm) for o in s.owners]) for s in info.sockets)
    return resp
