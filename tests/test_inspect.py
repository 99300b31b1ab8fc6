"""Inspect real lab pods: resolution through CRI, the comparison matrix, and verification,
including mismatches made on purpose."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from nsinspect.agent.core.errors import InvalidArgument, NotFound, NotRunning
from nsinspect.agent.core.model import NS_TYPES, PodFacts, PodRef, Source, Verdict
from nsinspect.agent.observe.inspect import Inspection, Inspector
from nsinspect.agent.resolve.cri import CriClient
from nsinspect.agent.resolve.cri_source import CriResolver
from nsinspect.agent.resolve.fallback import Resolver
from nsinspect.agent.resolve.proc_source import ProcResolver
from testbed.lab.config import LabConfig
from testbed.lab.pods import ContainerSpec, Lab, LabPod, PodSpec
from tests.nsread import ns_ids

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def inspector(lab_cfg: LabConfig) -> Iterator[Inspector]:
    client = CriClient(lab_cfg.endpoint)
    yield Inspector(Resolver(CriResolver(client), ProcResolver([lab_cfg.state])))
    client.close()


def _checks(result: Inspection, container: str) -> dict[str, tuple[Verdict, str]]:
    [v] = [v for v in result.verification if v.container == container]
    return {c.type: (c.verdict, c.explanation) for c in v.checks}


@pytest.mark.parametrize("name", ["plain", "shared", "targeted", "hostnet", "hostpid", "nonroot"])
def test_canonical_pods_resolve_and_verify(inspector: Inspector, canonical: dict[str, LabPod], name: str) -> None:
    lab_pod = canonical[name]
    result = inspector.inspect(PodRef("default", name))
    assert result.pod.source is Source.CRI and result.pod.uid == lab_pod.uid
    assert result.pod.sandbox is not None and result.pod.sandbox.pid == lab_pod.sandbox_pid
    assert {c.name: (c.id, c.pid) for c in result.pod.containers} == {
        n: (c.id, c.pid) for n, c in lab_pod.containers.items()}
    for cname, c in lab_pod.containers.items():  # reads agree with an independent reader
        assert {t: (i.dev, i.ino) for t, i in result.reads.containers[cname].ids.items()} == ns_ids(c.pid)
    assert result.verdict is Verdict.OK, [c.explanation for v in result.verification for c in v.checks
                                          if c.verdict is not Verdict.OK]
    assert not result.warnings


def test_matrix_shows_who_shares_what(inspector: Inspector) -> None:
    result = inspector.inspect(PodRef("default", "targeted"))
    cells = {name: {s.type: s for s in row} for name, row in result.comparison.items()}
    assert cells["debugger"]["pid"].containers == ("app",) and not cells["debugger"]["pid"].sandbox
    assert cells["app"]["mnt"].private and cells["debugger"]["mnt"].private
    assert cells["app"]["net"].sandbox and cells["app"]["net"].containers == ("debugger",)
    assert cells["app"]["time"].host and cells["app"]["user"].host
    assert "pid: the namespace of 'app', as expected" in _checks(result, "debugger")["pid"][1]


def test_hostnet_shares_the_host_network(inspector: Inspector) -> None:
    result = inspector.inspect(PodRef("default", "hostnet"))
    [cells] = result.comparison.values()
    net = next(s for s in cells if s.type == "net")
    assert net.host and net.sandbox
    assert _checks(result, "app")["net"][0] is Verdict.OK


def test_spec_facts_override_the_runtime(inspector: Inspector) -> None:
    # The spec says shareProcessNamespace, but this pod's containers have their own pid namespaces.
    result = inspector.inspect(PodRef("default", "plain"), facts=PodFacts(share_process_namespace=True))
    verdict, text = _checks(result, "app")["pid"]
    assert verdict is Verdict.MISMATCH
    assert text == "pid: expected the pod sandbox's (shareProcessNamespace); actually its own"
    # And hostNetwork that the pod does not have.
    verdict, text = _checks(inspector.inspect(PodRef("default", "plain"), facts=PodFacts(host_network=True)),
                            "sidecar")["net"]
    assert verdict is Verdict.MISMATCH and "expected the host's (hostNetwork); actually the pod sandbox's" in text


def test_target_is_ignored_with_share_process_namespace(inspector: Inspector) -> None:
    facts = PodFacts(target_container_name={"sidecar": "app"})
    result = inspector.inspect(PodRef("default", "shared"), facts=facts)
    verdict, text = _checks(result, "sidecar")["pid"]
    assert verdict is Verdict.OK
    assert "shareProcessNamespace; targetContainerName 'app' is ignored" in text


def test_a_runtime_that_ignores_target_is_caught(inspector: Inspector, lab: Lab) -> None:
    """The debugger was started in the sandbox's pid namespace although the spec targets app."""
    spec = PodSpec("ignores-target", (ContainerSpec("app"), ContainerSpec("debugger", pid="POD")))
    with lab.pod(spec):
        facts = PodFacts(target_container_name={"debugger": "app"})
        result = inspector.inspect(PodRef("default", "ignores-target"), facts=facts)
        verdict, text = _checks(result, "debugger")["pid"]
        assert result.verdict is Verdict.MISMATCH and verdict is Verdict.MISMATCH
        assert text == ("pid: expected the namespace of 'app' (targetContainerName); actually the pod "
                        "sandbox's: this runtime ignores TARGET (containerd < 1.5 does)")
        assert _checks(result, "app")["pid"][0] is Verdict.OK


def test_a_debugger_in_the_wrong_target_is_caught_on_both_sides(inspector: Inspector, lab: Lab) -> None:
    """The spec targets sidecar, the runtime joined app: the debugger is wrong, and app's own pid
    namespace holds a process that has no business there."""
    spec = PodSpec("wrong-target", (ContainerSpec("app"), ContainerSpec("sidecar")))
    with lab.pod(spec) as pod:
        lab.add_container(pod, ContainerSpec("debugger", pid="TARGET", target="app"))
        result = inspector.inspect(PodRef("default", "wrong-target"),
                                   facts=PodFacts(target_container_name={"debugger": "sidecar"}))
        verdict, text = _checks(result, "debugger")["pid"]
        assert verdict is Verdict.MISMATCH
        assert text == ("pid: expected the namespace of 'sidecar' (targetContainerName); "
                        "actually the namespace of 'app'")
        verdict, text = _checks(result, "app")["pid"]
        assert verdict is Verdict.MISMATCH
        assert text == "pid: expected its own (no shared process namespace); actually the namespace of 'debugger'"
        assert _checks(result, "sidecar")["pid"][0] is Verdict.OK
        # Without the spec's word, the runtime's TARGET is taken as intended.
        assert inspector.inspect(PodRef("default", "wrong-target")).verdict is Verdict.OK


def test_narrowed_to_one_container(inspector: Inspector) -> None:
    """Narrowing the answer must not narrow what the verdict is based on (the debugger's target)."""
    result = inspector.inspect(PodRef("default", "targeted"), container="debugger")
    assert list(result.comparison) == ["debugger"] and [v.container for v in result.verification] == ["debugger"]
    assert result.verdict is Verdict.OK
    assert "pid: the namespace of 'app', as expected" in _checks(result, "debugger")["pid"][1]
    assert result.comparison["debugger"][NS_TYPES.index("pid")].containers == ("app",)


def test_nothing_to_verify_is_unknown_not_ok(inspector: Inspector, lab: Lab) -> None:
    with lab.pod(PodSpec("all-exited", (ContainerSpec("app"),))) as pod:
        lab.stop_container(pod["app"].id)
        result = inspector.inspect(PodRef("default", "all-exited"))
        assert result.verdict is Verdict.UNKNOWN and "no running container to verify" in result.warnings


def test_uid_must_agree_with_the_namespace(inspector: Inspector, canonical: dict[str, LabPod]) -> None:
    uid = canonical["plain"].uid
    assert inspector.inspect(PodRef(namespace="default", uid=uid)).pod.name == "plain"
    with pytest.raises(NotFound, match="its namespace is not 'kube-system'"):
        inspector.inspect(PodRef(namespace="kube-system", uid=uid))
    with pytest.raises(NotFound, match="not found on this node"):
        inspector.inspect(PodRef("default", "shared", uid=uid))


def test_a_deleted_or_recreated_pod_is_never_served_from_cache(lab_cfg: LabConfig, lab: Lab) -> None:
    client = CriClient(lab_cfg.endpoint)
    resolver = Resolver(CriResolver(client), ProcResolver([lab_cfg.state]))
    spec = PodSpec("recreated", (ContainerSpec("app"),))
    try:
        first = lab.create_pod(spec)
        assert resolver.resolve(PodRef("default", "recreated")).sandbox.id == first.sandbox_id  # type: ignore[union-attr]
        lab.remove_pod(first)
        with pytest.raises(NotFound):
            resolver.resolve(PodRef("default", "recreated"))
        second = lab.create_pod(spec)
        again = resolver.resolve(PodRef("default", "recreated"))
        assert again.sandbox is not None and again.sandbox.id == second.sandbox_id
        assert [c.id for c in again.containers] == [second["app"].id]
        lab.remove_pod(second)
    finally:
        for p in lab.pods():
            if p.name == "recreated":
                lab.remove_pod(p)
        client.close()


def test_unknown_target_in_the_facts_is_refused(inspector: Inspector) -> None:
    with pytest.raises(InvalidArgument, match='targetContainerName "ghost" of "debugger" is not a container'):
        inspector.inspect(PodRef("default", "targeted"), facts=PodFacts(target_container_name={"debugger": "ghost"}))


def test_by_uid(inspector: Inspector, canonical: dict[str, LabPod]) -> None:
    result = inspector.inspect(PodRef(uid=canonical["nonroot"].uid))
    assert result.pod.name == "nonroot"


def test_unknown_pod_and_container(inspector: Inspector) -> None:
    with pytest.raises(NotFound, match="pod default/no-such-pod not found"):
        inspector.inspect(PodRef("default", "no-such-pod"))
    with pytest.raises(NotFound, match='container "ghost" not found in pod default/plain'):
        inspector.inspect(PodRef("default", "plain"), container="ghost")


def test_stopped_container_is_not_running(inspector: Inspector, lab: Lab) -> None:
    with lab.pod(PodSpec("stopping", (ContainerSpec("app"), ContainerSpec("sidecar")))) as pod:
        lab.stop_container(pod["sidecar"].id)
        with pytest.raises(NotRunning, match='container "sidecar" of pod default/stopping is not running'):
            inspector.inspect(PodRef("default", "stopping"), container="sidecar")
        whole = inspector.inspect(PodRef("default", "stopping"))
        assert list(whole.comparison) == ["app"]
        assert {c.name: c.state for c in whole.pod.containers} == {"app": "running", "sidecar": "exited"}


def test_container_killed_between_calls(inspector: Inspector, lab: Lab) -> None:
    """The cache must not hand out a dead PID: the answer is re-resolved, never an error."""
    with lab.pod(PodSpec("dying", (ContainerSpec("app"), ContainerSpec("sidecar")))) as pod:
        assert inspector.inspect(PodRef("default", "dying")).verdict is Verdict.OK  # warms the cache
        os.kill(pod["sidecar"].pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while True:
            result = inspector.inspect(PodRef("default", "dying"))
            sidecar = result.pod.container("sidecar")
            assert sidecar is not None
            if sidecar.state == "exited" or time.monotonic() > deadline:
                break
            # Until the runtime notices, the dead process is reported, not misattributed.
            assert "sidecar" not in result.reads.containers or result.reads.containers["sidecar"].gone
            time.sleep(0.05)
        assert sidecar.state == "exited" and "sidecar" not in result.comparison
        assert result.verdict is Verdict.OK
