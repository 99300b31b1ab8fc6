"""Many pods on many nodes: ask each node's agent, in parallel with a bound, and merge the answers.

One port-forward per node serves all of that node's pods. A node whose agent cannot be reached
gives an error for its pods only; every answer and every error is tagged with node and pod.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from kubernetes.client.exceptions import ApiException

from . import kube, portforward, render
from .agentclient import Credentials, credentials, explain, open_channel
from .errors import EXIT_ERROR, CliError
from .target import agent_port


@dataclass(frozen=True)
class Outcome:
    node: str
    pod: str  # namespace/name, or "" for a node-wide answer
    response: Message | None = None
    error: str = ""


# (channel, target pod or None) -> the response; raises grpc.RpcError or CliError
Ask = Callable[[grpc.Channel, Any], Message]


def _ask_node(k: kube.Kube, args: argparse.Namespace, node: str, pods: Sequence[Any], ask: Ask, *,
              creds: Credentials) -> list[Outcome]:
    names = [f"{p.metadata.namespace}/{p.metadata.name}" for p in pods] or [""]
    try:
        agent = kube.find_agent(k, node, args.agent_namespace)
        forward = portforward.Forwarder(k, agent.metadata.namespace, agent.metadata.name,
                                        agent_port(agent, kube.AGENT_PORT))
    except CliError as err:
        return [Outcome(node, name, error=str(err)) for name in names]
    outcomes = []
    with forward as address, open_channel(address, creds) as channel:
        for pod, name in zip(pods or [None], names, strict=True):
            try:
                outcomes.append(Outcome(node, name, ask(channel, pod)))
            except grpc.RpcError as err:
                outcomes.append(Outcome(node, name, error=str(explain(err, f"the agent on node {node}"))))
            except CliError as err:
                outcomes.append(Outcome(node, name, error=str(err)))
    return outcomes


def over_pods(args: argparse.Namespace, ask: Ask) -> list[Outcome]:
    """`ask` for every pod matching args.selector (in -n's namespace, or all with -A)."""
    k = kube.connect(args)
    try:
        if args.all_namespaces:
            found = k.core.list_pod_for_all_namespaces(label_selector=args.selector).items
        else:
            found = k.core.list_namespaced_pod(args.namespace or k.namespace, label_selector=args.selector).items
    except ApiException as err:
        raise kube.api_error(err, "cannot list pods") from None
    if not found:
        raise CliError(f"no pods match {args.selector!r}")
    by_node: dict[str, list[Any]] = {}
    unscheduled = []
    for pod in found:
        if pod.spec.node_name:
            by_node.setdefault(pod.spec.node_name, []).append(pod)
        else:
            unscheduled.append(Outcome("", f"{pod.metadata.namespace}/{pod.metadata.name}",
                                       error="not scheduled to a node yet"))
    return unscheduled + _run(k, args, by_node, ask)


def over_nodes(args: argparse.Namespace, ask: Ask) -> list[Outcome]:
    """`ask` once per node (args.node, or every node with --all-nodes)."""
    k = kube.connect(args)
    if args.all_nodes:
        try:
            nodes = [n.metadata.name for n in k.core.list_node().items]
        except ApiException as err:
            raise kube.api_error(err, "cannot list nodes") from None
    else:
        nodes = [args.node]
    return _run(k, args, {n: [] for n in nodes}, ask)


def _run(k: kube.Kube, args: argparse.Namespace, by_node: dict[str, list[Any]], ask: Ask) -> list[Outcome]:
    creds = credentials(args, k)
    with ThreadPoolExecutor(max_workers=max(1, args.max_concurrency), thread_name_prefix="node") as pool:
        jobs = [pool.submit(_ask_node, k, args, node, pods, ask, creds=creds) for node, pods in sorted(by_node.items())]
        return [outcome for job in jobs for outcome in job.result()]


def emit(outcomes: Sequence[Outcome], args: argparse.Namespace, text: Callable[[Any], str]) -> int:
    """Print every answer tagged by node and pod; errors go to stderr as they are. Exit: the worst."""
    if args.output in ("json", "yaml"):
        items = [{"node": o.node, "pod": o.pod, **({"result": render.as_dict(o.response)} if o.response is not None
                                                   else {"error": o.error})} for o in outcomes]
        import json  # noqa: PLC0415

        if args.output == "json":
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
