"""The comparison matrix: for each container and namespace type, who else holds that namespace."""

from __future__ import annotations

from ..core.model import NS_TYPES, PodNamespaces, Sharing


def sharing(reads: PodNamespaces, container: str, type_: str) -> Sharing:
    mine = reads.containers[container].ids.get(type_)
    if mine is None:
        return Sharing(type_, unknown=True)
    return Sharing(
        type_,
        host=reads.host.ids.get(type_) == mine,
        sandbox=reads.sandbox is not None and reads.sandbox.ids.get(type_) == mine,
        containers=tuple(sorted(n for n, p in reads.containers.items() if n != container and p.ids.get(type_) == mine)),
    )


def compare(reads: PodNamespaces, only: str = "") -> dict[str, tuple[Sharing, ...]]:
    """Rows for every container (or just `only`), cells in NS_TYPES order."""
    return {name: tuple(sharing(reads, name, t) for t in NS_TYPES)
            for name in reads.containers if not only or name == only}
