"""`nsinspect nsmap`: every namespace on a node, with the pod and container that owns it: from one
agent (--agent ADDR), or through Kubernetes from the agent of --node NODE or of every node.
"""

from __future__ import annotations

import argparse
from typing import Any

import grpc

from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc

from .. import render
from ..agentclient import explain, open_channel
from ..context import Context
from ..errors import EXIT_OK, EXIT_USAGE, CliError


def run_nsmap(ctx: Context, args: argparse.Namespace) -> int:
    request = pb.NodeMapRequest(types=args.type)
    if not ctx.agent:
        if not (args.node or args.all_nodes):
            raise CliError("nsmap needs --agent ADDR, --node NODE or --all-nodes", exit_code=EXIT_USAGE)
        from .. import fanout  # noqa: PLC0415 - it needs the kubernetes client, slow to import

        def ask(channel: grpc.Channel, _: Any) -> pb.NodeMapResponse:
            return pb_grpc.AgentStub(channel).NodeMap(request, timeout=ctx.timeout)

        outcomes = fanout.over_nodes(ctx, args.node, args.all_nodes, args.max_concurrency, ask)
        return fanout.write_all(outcomes, ctx.output, lambda r: render.node_map_text(r, wide=ctx.wide))
    with open_channel(ctx.agent, ctx.credentials()) as channel:
        try:
            resp = pb_grpc.AgentStub(channel).NodeMap(request, timeout=ctx.timeout)
        except grpc.RpcError as err:
            raise explain(err, ctx.agent) from None
    render.write(resp, ctx.output, lambda: render.node_map_text(resp, wide=ctx.wide))
    return EXIT_OK
