"""The node pass for outsiders (agent/observe/outsiders.py) is shared by concurrent requests, and never
older than the request: a request joins the next pass that has not started, never one under way."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial

import pytest

from nsinspect.agent.core.model import PodRef
from nsinspect.agent.core.nsid import NamespaceId
from nsinspect.agent.core.process import ProcessFacts
from nsinspect.agent.observe import outsider_pass, outsiders
from nsinspect.agent.observe.outsider_pass import Joined, Query
from nsinspect.agent.observe.outsiders import OutsiderScan
from nsinspect.agent.observe.pass_helper import WalkHelper
from nsinspect.agent.observe.processes import ProcessLister
from nsinspect.agent.procfs import procns
from testbed.lab.config import LabConfig
from testbed.lab.pods import CANONICAL, ContainerSpec, Lab, LabPod, PodSpec
from tests.podprocs import by_argv, host_process, lister_for, listing_until, until


def _has_sleep(n: str, got: list[ProcessFacts]) -> bool:
    return bool(by_argv(got, "sleep", n))


def _query(n: int) -> Query:
    return Query({NamespaceId("pid", 0, n): "app"}, None, {}, frozenset())


class SlowWalk:
    """Stands in for the /proc pass (the pass itself is tested on the lab below): records which
    queries each pass answered, and holds the first pass until released."""

    def __init__(self) -> None:
        self.passes: list[list[Query]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()

    def __call__(self, queries: list[Query]) -> list[Joined]:
        self.passes.append(list(queries))
        if len(self.passes) == 1:
            self.first_started.set()
            self.release.wait(10)
        return [Joined(1000 + i, next(iter(q.pid_targets)), None) for i, q in enumerate(queries)]


def test_requests_during_a_pass_share_the_next_one(monkeypatch: pytest.MonkeyPatch) -> None:
    walk = SlowWalk()
    monkeypatch.setattr(outsiders, "node_pass", walk)
    scan = OutsiderScan()
    answers: dict[int, list[Joined]] = {}

    def ask(n: int) -> None:
        answers[n] = scan.find(_query(n))

    first = threading.Thread(target=ask, args=(1,))
    first.start()
    assert walk.first_started.wait(10)
    waiting = [threading.Thread(target=ask, args=(n,)) for n in (2, 3, 4)]
    for t in waiting:
        t.start()
    deadline = time.monotonic() + 10
    while (scan._next is None or len(scan._next.queries) < 3) and time.monotonic() < deadline:
        time.sleep(0.01)
    walk.release.set()
    for t in (first, *waiting):
        t.join(10)
    assert [sorted(str(next(iter(q.pid_targets))) for q in p) for p in walk.passes] == [
        ["pid:[1]"], ["pid:[2]", "pid:[3]", "pid:[4]"]]  # not the pass under way: the next, together
    assert scan.passes == 2
    for n in (1, 2, 3, 4):  # each got its own hits out of the shared pass
        assert [str(j.pid_ns) for j in answers[n]] == [f"pid:[{n}]"]
    ask(5)  # nothing under way: a pass of its own, at once
    assert scan.passes == 3 and len(walk.passes[-1]) == 1


def test_a_failed_pass_fails_its_requests_and_the_next_pass_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def broken(queries: list[Query]) -> list[Joined]:
        calls.append(len(queries))
        if len(calls) == 1:
            raise OSError("no /proc")
        return []

    monkeypatch.setattr(outsiders, "node_pass", broken)
    scan = OutsiderScan()
    with pytest.raises(OSError, match="no /proc"):
        scan.find(_query(1))
    assert scan.find(_query(2)) == [] and calls == [1, 1]


@pytest.fixture()
def lister(lab_cfg: LabConfig) -> Iterator[ProcessLister]:
    with lister_for(lab_cfg) as made:
        yield made


def test_concurrent_listings_find_their_outsiders(lister: ProcessLister, lab: Lab,
                                                  canonical: dict[str, LabPod]) -> None:
    """Real /proc: listings of many pods at once each find their own nsenter'd processes."""
    specs = [PodSpec(f"outsiders-{i}", (ContainerSpec("app"),)) for i in range(3)]
    with lab.pod(specs[0]) as a, lab.pod(specs[1]) as b, lab.pod(specs[2]) as c, \
            host_process("nsenter", "-t", str(a["app"].pid), "-p", "-n", "sleep", "401"), \
            host_process("nsenter", "-t", str(b["app"].pid), "-n", "sleep", "402"), \
            host_process("nsenter", "-t", str(c["app"].pid), "-p", "-n", "sleep", "403"):
        for pod, n in ((a, "401"), (b, "402"), (c, "403")):  # each is visible before the race starts
            listing_until(lister, pod.name, partial(_has_sleep, n))
        names = [a.name, b.name, c.name, *(s.name for s in CANONICAL if s.name in ("plain", "shared"))] * 3
        results: dict[int, list[str]] = {}
        before = lister.outsiders.passes
        start = threading.Barrier(len(names))

        def one(i: int) -> None:
            start.wait()
            found = lister.list(PodRef("default", names[i]))
            results[i] = sorted(p.argv[-1] for p in found.processes if p.member.outside and p.argv[:1] == ("sleep",))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(names))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        want = {a.name: ["401"], b.name: ["402"], c.name: ["403"], "plain": [], "shared": []}
        assert len(results) == len(names)
        for i, got in results.items():
            assert got == want[names[i]], names[i]
        assert lister.outsiders.passes - before < len(names)  # passes were shared



def test_the_helper_process_walks_as_the_agent_would(lab: Lab, canonical: dict[str, LabPod]) -> None:
    """The agent's passes run in a helper process (off its interpreter lock): same answers, and a
    helper that dies is replaced."""
    with lab.pod(PodSpec("outsiders-helper", (ContainerSpec("app"),))) as pod:
        app = pod["app"].pid
        with host_process("nsenter", "-t", str(app), "-p", "-n", "sleep", "404") as entered:
            ids = procns.read_namespaces(app, types=("pid", "net")).ids
            query = Query({ids["pid"]: "app"}, ids["net"], {ids["pid"]: app},
                          frozenset({app, pod.sandbox_pid}))
            helper = WalkHelper()
            try:
                def walks() -> tuple[set[int], set[int]] | None:
                    ours = {j.pid for j in helper([query])}
                    return (ours, {j.pid for j in outsider_pass.node_pass([query])}) if entered.pid in ours else None

                ours, here = until("the nsenter'd sleep is seen", walks)
                assert ours == here and app not in ours
                first = helper._proc
                assert first is not None
                first.kill()
                first.wait()
                assert {j.pid for j in helper([query])} >= {entered.pid}  # this pass made here, the next helper new
                assert {j.pid for j in helper([query])} >= {entered.pid}
                assert helper._proc is not None and helper._proc is not first and helper._proc.poll() is None
            finally:
                helper.close()
