"""Helpers for the process and network tests: an in-process lister, waiting, and host processes
that join a pod's namespaces (nsenter) and are always killed afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from nsinspect.agent.core.model import PodRef
from nsinspect.agent.core.process import ProcessFacts
from nsinspect.agent.observe.processes import ProcessLister
from nsinspect.agent.resolve.cri import CriClient
from nsinspect.agent.resolve.cri_source import CriResolver
from nsinspect.agent.resolve.fallback import Resolver
from nsinspect.agent.resolve.proc_source import ProcResolver
from testbed.lab.config import LabConfig

T = TypeVar("T")
QUIET = "</dev/null >/dev/null 2>&1"  # ExecSync waits for the exec's output to close: detach background jobs


@contextmanager
def lister_for(cfg: LabConfig) -> Iterator[ProcessLister]:
    client = CriClient(cfg.endpoint)
    try:
        yield ProcessLister(Resolver(CriResolver(client), ProcResolver([cfg.state])))
    finally:
        client.close()


def until(what: str, probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def listing(lister: ProcessLister, pod: str, container: str = "", sample: float = 0.0) -> list[ProcessFacts]:
    return list(lister.list(PodRef("default", pod), container, sample).processes)


def listing_until(lister: ProcessLister, pod: str, ok: Callable[[list[ProcessFacts]], bool],
                  container: str = "") -> list[ProcessFacts]:
    """The pod's listing, once `ok` accepts it."""
    def probe() -> list[ProcessFacts] | None:
        got = listing(lister, pod, container)
        return got if ok(got) else None

    return until(f"the listing of {pod} to settle", probe)


def by_argv(procs: Sequence[ProcessFacts], *argv: str) -> list[ProcessFacts]:
    return [p for p in procs if p.argv[:len(argv)] == argv]


@contextmanager
def host_process(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process started from the host (e.g. nsenter into a pod; util-linux nsenter forks by itself for
    -p), killed with its children afterwards."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
