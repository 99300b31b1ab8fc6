"""What a pod spec says its containers should share: the facts the agent verifies against."""

from __future__ import annotations

from typing import Any

from nsinspect.proto import agent_pb2 as pb

from .errors import EXIT_USAGE, CliError


def from_pod(pod: Any) -> pb.PodFacts:
    """PodFacts from a V1Pod: host namespaces, shareProcessNamespace, hostUsers, and each
    ephemeral container's targetContainerName."""
    spec = pod.spec
    facts = pb.PodFacts(host_network=bool(spec.host_network), host_pid=bool(spec.host_pid),
                        host_ipc=bool(spec.host_ipc), share_process_namespace=bool(spec.share_process_namespace),
                        host_users=spec.host_users is not False)
    for ec in spec.ephemeral_containers or []:
        if ec.target_container_name:
            facts.target_container_name[ec.name] = ec.target_container_name
    return facts


def with_targets(facts: pb.PodFacts, pairs: list[str]) -> pb.PodFacts:
    """Add `--target CONTAINER=TARGET` pairs (they win over the spec)."""
    for pair in pairs:
        container, sep, target = pair.partition("=")
        if not (sep and container and target):
            raise CliError(f"--target wants CONTAINER=TARGET, not {pair!r}", exit_code=EXIT_USAGE)
        facts.target_container_name[container] = target
    return facts
