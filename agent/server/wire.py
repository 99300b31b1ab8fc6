"""Model values to and from nsinspect.v1 messages; the only module that knows both shapes."""

from __future__ import annotations

from collections.abc import Iterable

from nsinspect.proto import agent_pb2 as pb

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
from ..core.nsid import NamespaceId
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
