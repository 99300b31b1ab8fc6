"""What a source of pods answers, whichever it is: the runtime's CRI API or its records on disk.

Both sources (cri_source.CriResolver, proc_source.ProcResolver) take the same questions in the same
shape, so the fallback (fallback.Resolver, itself one) chooses between two PodSources in one place
and the code above it never knows which answered, except where the answer says so: every PodInfo
carries its `source`, and a PodList says which source listed it (an empty list too).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from ..core.model import PodInfo, PodRef


class PodList(NamedTuple):
    """Every pod a source sees on this node, and whether that source was CRI (the node map says so)."""

    pods: list[PodInfo]
    from_cri: bool


class PodSource(Protocol):
    """A pod to its sandbox, containers and init PIDs (with start times, so readers can refuse a reused PID)."""

    def resolve(self, ref: PodRef, fresh: bool = False) -> PodInfo:
        """The pod by namespace/name, by UID, or both; `fresh` skips whatever the source caches.
        Raises NotFound, InvalidArgument, or RuntimeUnavailable when the source cannot answer."""
        ...

    def list_pods(self) -> PodList:
        """Every pod on the node with a live sandbox or container."""
        ...
