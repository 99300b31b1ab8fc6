"""Many pods on many nodes: ask each node's agent, in parallel with a bound, and merge the answers.

One port-forward per node serves all of that node's pods. A node whose agent cannot be reached
gives an error for its pods only; every answer and every error is tagged with node and pod.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from kubernetes.client.exceptions import ApiException

from . import kube, portforward, render
from .agentclient import explain, open_channel
from .context import Context
from .errors import EXIT_ERROR, CliError


@dataclass(frozen=True)
class Outcome:
    node: str
    pod: str  # namespace/name, or "" for a node-wide answer
    response: Message | None = None
    error: str = ""


# (channel, target pod or None) -> the response; raises grpc.RpcError or CliError
Ask = Callable[[grpc.Channel, Any], Message]


def _ask_node(ctx: Context, node: str, pods: Sequence[Any], ask: Ask) -> list[Outcome]:
    names = [f"{p.metadata.namespace}/{p.metadata.name}" for p in pods] or [""]
    k = ctx.kube()
    try:
        agent = kube.find_agent(k, node, ctx.agent_namespace)
        forward = portforward.Forwarder(k, agent.metadata.namespace, agent.metadata.name, kube.agent_port(agent))
    except CliError as err:
        return [Outcome(node, name, error=str(err)) for name in names]
    outcomes = []
    with forward as address, open_channel(address, ctx.credentials()) as channel:
        for pod, name in zip(pods or [None], names, strict=True):
            try:
                outcomes.append(Outcome(node, name, ask(channel, pod)))
            except grpc.RpcError as err:
                outcomes.append(Outcome(node, name, error=str(explain(err, f"the agent on node {node}"))))
            except CliError as err:
                outcomes.append(Outcome(node, name, error=str(err)))
    return outcomes


def over_pods(ctx: Context, selector: str, all_namespaces: bool, concurrency: int, ask: Ask) -> list[Outcome]:
    """`ask` for every pod matching `selector` (in -n's namespace, or in all of them), `concurrency`
    nodes at once."""
    k = ctx.kube()
    try:
        if all_namespaces:
            found = k.core.list_pod_for_all_namespaces(label_selector=selector).items
        else:
            found = k.core.list_namespaced_pod(ctx.namespace(), label_selector=selector).items
    except ApiException as err:
        raise kube.api_error(err, "cannot list pods") from None
    if not found:
        raise CliError(f"no pods match {selector!r}")
    by_node: dict[str, list[Any]] = {}
    unscheduled = []
    for pod in found:
        if pod.spec.node_name:
            by_node.setdefault(pod.spec.node_name, []).append(pod)
        else:
            unscheduled.append(Outcome("", f"{pod.metadata.namespace}/{pod.metadata.name}",
                                       error="not scheduled to a node yet"))
    return unscheduled + _run(ctx, by_node, concurrency, ask)


def over_nodes(ctx: Context, node: str, all_nodes: bool, concurrency: int, ask: Ask) -> list[Outcome]:
    """`ask` once per node (`node`, or every node with `all_nodes`), `concurrency` nodes at once."""
    k = ctx.kube()
    if all_nodes:
        try:
            nodes = [n.metadata.name for n in k.core.list_node().items]
        except ApiException as err:
            raise kube.api_error(err, "cannot list nodes") from None
    else:
        nodes = [node]
    return _run(ctx, {n: [] for n in nodes}, concurrency, ask)


def _run(ctx: Context, by_node: dict[str, list[Any]], concurrency: int, ask: Ask) -> list[Outcome]:
    ctx.credentials()  # once, before the threads: no token is one error, not one per node
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="node") as pool:
        jobs = [pool.submit(_ask_node, ctx, node, pods, ask) for node, pods in sorted(by_node.items())]
        return [outcome for job in jobs for outcome in job.result()]


def write_all(outcomes: Sequence[Outcome], output: str, text: Callable[[Any], str]) -> int:
    """Print every answer tagged by node and pod; errors go to stderr as they are. Exit: the worst."""
    if output in ("json", "yaml"):
        items = [{"node": o.node, "pod": o.pod, **({"result": render.as_dict(o.response)} if o.response is not None
                                                   else {"error": o.error})} for o in outcomes]
        import json  # noqa: PLC0415

        if output == "json":
            sys.stdout.write(json.dumps({"items": items}, indent=2) + "\n")
        else:
            import yaml  # noqa: PLC0415

            sys.stdout.write(yaml.safe_dump({"items": items}, sort_keys=False))
    else:
        for o in outcomes:
            if o.response is not None:
                sys.stdout.write(f"=== node {o.node}{'  pod ' + o.pod if o.pod else ''}\n{text(o.response)}\n")
    for o in outcomes:
        if o.error:
            print(f"error: node {o.node or '-'}{' pod ' + o.pod if o.pod else ''}: {o.error}", file=sys.stderr)
    return EXIT_ERROR if any(o.error for o in outcomes) else 0
