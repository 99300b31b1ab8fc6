"""Pick the source of truth for a pod: the runtime's CRI API, else /proc and the runtime's bundles.

The one place that chooses between the two PodSources (source.py), and a PodSource itself, so the
code above it asks one thing. When CRI fails, callers are answered from /proc at once, and CRI is
not asked again for `retry_after` seconds, so a dead runtime costs one timeout, not one per
request. Each answer is counted by its source, each failed CRI call by its kind, into whatever
`Counts` the agent hands in (its metrics: server/metrics.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from ..core.errors import NotFound, NotRunning, RuntimeUnavailable
from ..core.model import PodInfo, PodRef
from .cri import CriUnavailable
from .proc_source import ProcResolver
from .source import PodList, PodSource

AnswerT = TypeVar("AnswerT")

log = logging.getLogger(__name__)


class Counts(Protocol):
    """Where the resolver counts what it did; the agent's metrics are one."""

    def resolution(self, source: str) -> None: ...

    def runtime_error(self, kind: str) -> None: ...


class NoCounts:
    def resolution(self, source: str) -> None:
        pass

    def runtime_error(self, kind: str) -> None:
        pass


class Resolver:
    """CRI's answers while it works (`cri`: a CriResolver, None without an endpoint), else those of
    `proc`, whose bundle store the exec service also reads; safe to share between threads."""

    def __init__(self, cri: PodSource | None, proc: ProcResolver, retry_after: float = 1.0,
                 counts: Counts | None = None) -> None:
        self.cri = cri
        self.proc = proc
        self.retry_after = retry_after
        self.counts = counts or NoCounts()
        self._cri_down_until = 0.0
        self._cri_error = "no CRI endpoint configured or found" if cri is None else ""
        self._lock = threading.Lock()

    def _cri_usable(self) -> PodSource | None:
        with self._lock:
            return self.cri if self.cri is not None and time.monotonic() >= self._cri_down_until else None

    def _cri_failed(self, err: RuntimeUnavailable) -> None:
        self.counts.runtime_error(err.kind if isinstance(err, CriUnavailable) else "unavailable")
        with self._lock:
            if not self._cri_down_until or time.monotonic() >= self._cri_down_until:
                log.warning("CRI unavailable, answering from /proc", extra={"error": str(err)})
            self._cri_down_until = time.monotonic() + self.retry_after
            self._cri_error = str(err)

    def _cri_ok(self) -> None:
        with self._lock:
            if self._cri_down_until:
                log.info("CRI is back")
            self._cri_down_until = 0.0

    def resolve(self, ref: PodRef, fresh: bool = False) -> PodInfo:
        """The pod `ref` names, from the best source; every part of `ref` that is given must match."""
        pod = self._resolve(ref, fresh)
        for part, want, got in (("namespace", ref.namespace, pod.namespace), ("name", ref.name, pod.name),
                                ("UID", ref.uid, pod.uid)):
            if want and want != got:
                raise NotFound(f"pod {ref} not found on this node (its {part} is not {want!r})")
        return pod

    def running(self, ref: PodRef, container: str = "", fresh: bool = False) -> PodInfo:
        """The pod, with `container` (if given) running, else with a ready sandbox: what every
        call that reads processes needs. A container not seen yet gets one uncached look."""
        pod = self.resolve(ref, fresh)
        if container and pod.container(container) is None and not fresh:
            pod = self.resolve(ref, fresh=True)
        if container:
            found = pod.container(container)
            if found is None:
                raise NotFound(f'container "{container}" not found in pod {pod.namespace}/{pod.name}')
            if found.state != "running":
                raise NotRunning(f'container "{container}" of pod {pod.namespace}/{pod.name} is not running '
                                 f"(state: {found.state})")
        elif pod.sandbox is None or pod.sandbox.state != "ready":
            raise NotRunning(f"pod {pod.namespace}/{pod.name} has no running sandbox")
        return pod

    def list_pods(self) -> PodList:
        """Every pod on the node, and whether CRI (rather than /proc) answered."""
        return self._ask(lambda source: source.list_pods())

    def _resolve(self, ref: PodRef, fresh: bool) -> PodInfo:
        return self._ask(lambda source: source.resolve(ref, fresh))

    def _ask(self, question: Callable[[PodSource], AnswerT]) -> AnswerT:
        """The one choice: CRI's answer unless it is down or fails, else the /proc fallback's."""
        if (cri := self._cri_usable()) is not None:
            try:
                answer = question(cri)
            except RuntimeUnavailable as err:
                self._cri_failed(err)
            else:
                self._cri_ok()
                self.counts.resolution("cri")
                return answer
        try:
            answer = question(self.proc)
        except RuntimeUnavailable as err:
            self.counts.runtime_error("proc_fallback")
            raise RuntimeUnavailable(f"{self._cri_error}; the /proc fallback cannot answer either: {err}") from err
        except OSError as err:
            self.counts.runtime_error("proc_fallback")
            raise RuntimeUnavailable(f"{self._cri_error}; the /proc fallback failed too: {err}") from err
        self.counts.resolution("proc")
        return answer
