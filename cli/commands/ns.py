"""`nsinspect ns POD`: which namespaces each container of a pod has (a table of who else holds each
one), and the agent's verification of them against what the pod spec says they should be. With
-l SELECTOR: every matching pod, on every node. Exit code: the verdict's (3 mismatch, 4 unknown).
"""

from __future__ import annotations

import argparse
from typing import Any

import grpc

from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc

from .. import facts, render
from ..context import Context
from ..errors import EXIT_OK, verdict_exit
from ..target import Reached, call


def run_ns(ctx: Context, args: argparse.Namespace) -> int:
    if args.selector:
        return _inspect_many(ctx, args)

    def request(agent: Reached) -> pb.InspectRequest:
        spec = facts.from_pod(agent.pod) if agent.pod is not None else pb.PodFacts()
        return pb.InspectRequest(pod=agent.ref, container=args.container, facts=facts.with_targets(spec, args.target))

    resp = call(ctx, pb_grpc.AgentStub, "Inspect", request)
    render.write(resp, ctx.output, lambda: render.inspection_text(resp, wide=ctx.wide, narrowed=bool(args.container)))
    return verdict_exit(resp.verdict)


def _inspect_many(ctx: Context, args: argparse.Namespace) -> int:
    from .. import fanout  # noqa: PLC0415 - it needs the kubernetes client, slow to import

    def ask(channel: grpc.Channel, pod: Any) -> pb.InspectResponse:
        request = pb.InspectRequest(pod=pb.PodRef(namespace=pod.metadata.namespace, name=pod.metadata.name),
                                    container=args.container, facts=facts.with_targets(facts.from_pod(pod),
                                                                                       args.target))
        return pb_grpc.AgentStub(channel).Inspect(request, timeout=ctx.timeout)

    outcomes = fanout.over_pods(ctx, args.selector, args.all_namespaces, args.max_concurrency, ask)
    code = fanout.write_all(outcomes, ctx.output, lambda r: render.inspection_text(r, wide=ctx.wide))
    return code or max((verdict_exit(o.response.verdict) for o in outcomes  # type: ignore[attr-defined]
                        if o.response is not None), default=EXIT_OK)
