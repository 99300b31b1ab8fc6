"""`nsinspect verify POD [NAME...]`: what existing ephemeral containers really share, checked by the
node's agent against the pod spec (their targetContainerName). debug runs the same check on the
container it has just added. Exit code: 3 when any container mismatches, else 4 when any is
unknown, else 0.
"""

from __future__ import annotations

import argparse
from functools import partial

import grpc

from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc

from .. import facts, render
from ..agentclient import explain, open_channel
from ..context import Context
from ..errors import EXIT_MISMATCH, EXIT_OK, CliError, verdict_exit
from ..target import reach


def run_verify(ctx: Context, args: argparse.Namespace) -> int:
    return verify_containers(ctx, args.names)


def verify_containers(ctx: Context, names: list[str]) -> int:
    """Inspect each named container (none: every ephemeral container) through the node's agent and
    print its verification."""
    codes: list[int] = []
    with reach(ctx) as agent:
        if agent.pod is None:
            raise CliError("verify needs the pod spec: use it through Kubernetes, not with --agent")
        namespace = agent.ref.namespace
        spec_facts = facts.from_pod(agent.pod)
        known = [c.name for c in agent.pod.spec.ephemeral_containers or []]
        for name in names or known:
            if name not in known:
                raise CliError(f'pod {namespace}/{ctx.pod} has no ephemeral container "{name}"')
        if not (names or known):
            raise CliError(f"pod {namespace}/{ctx.pod} has no ephemeral containers to verify")
        with open_channel(agent.address, agent.credentials) as channel:
            stub = pb_grpc.AgentStub(channel)
            for name in names or known:
                request = pb.InspectRequest(pod=pb.PodRef(namespace=namespace, name=ctx.pod), container=name,
                                            facts=spec_facts)
                try:
                    resp = stub.Inspect(request, timeout=ctx.timeout)
                except grpc.RpcError as err:
                    raise explain(err, agent.where) from None
                codes.append(verdict_exit(resp.verdict))
                render.write(resp, ctx.output, partial(render.inspection_text, resp, wide=ctx.wide, narrowed=True))
    return EXIT_MISMATCH if EXIT_MISMATCH in codes else max(codes, default=EXIT_OK)
