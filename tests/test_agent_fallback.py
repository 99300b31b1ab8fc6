"""The agent keeps answering when containerd dies, says where the answer came from, and returns
to CRI when containerd is back. Runs on its own lab instance so the main lab is never disturbed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc
from nsinspect.proto.rpcerror import rpc_status
from testbed.agentproc import running_agent
from testbed.lab import runtime
from testbed.lab.config import LabConfig
from testbed.lab.pods import CANONICAL, Lab, LabPod
from tests.conftest import require_root

pytestmark = pytest.mark.lab

CFG = LabConfig(name="agentdown", slot=3)


@pytest.fixture(scope="module")
def pods() -> Iterator[dict[str, LabPod]]:
    require_root()
    try:
        runtime.up(CFG)
        with Lab(CFG) as lab:
            yield {spec.name: lab.create_pod(spec) for spec in CANONICAL if spec.name in ("targeted", "shared")}
    finally:
        runtime.down(CFG, purge=True)


def _inspect(stub: pb_grpc.AgentStub, name: str) -> pb.InspectResponse:
    return stub.Inspect(pb.InspectRequest(pod=pb.PodRef(namespace="default", name=name)), timeout=5)


def test_containerd_down_then_back(pods: dict[str, LabPod], tmp_path: Path) -> None:
    with running_agent(CFG, tmp_path / "agent.sock") as address, grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AgentStub(channel)
        before = _inspect(stub, "targeted")
        assert before.pod.source == pb.SOURCE_CRI and before.verdict == pb.VERDICT_OK

        runtime.stop_containerd(CFG)
        during = _inspect(stub, "targeted")
        assert during.pod.source == pb.SOURCE_PROC and during.verdict == pb.VERDICT_OK
        assert any("answered from /proc" in w for w in during.warnings)
        assert {c.name: c.process.pid for c in during.pod.containers} == {
            c.name: c.process.pid for c in before.pod.containers}
        assert [r.cells for r in during.comparison] == [r.cells for r in before.comparison]
        shared = _inspect(stub, "shared")
        assert shared.pod.source == pb.SOURCE_PROC and shared.verdict == pb.VERDICT_OK
        with pytest.raises(grpc.RpcError) as err:
            _inspect(stub, "no-such-pod")
        assert rpc_status(err.value)[0] == grpc.StatusCode.NOT_FOUND

        runtime.up(CFG)
        deadline = time.monotonic() + 5
        while _inspect(stub, "targeted").pod.source != pb.SOURCE_CRI:
            assert time.monotonic() < deadline, "CRI answers again within 5 s of containerd's return"
            time.sleep(0.1)


def test_runtime_down_and_no_fallback_is_unavailable(pods: dict[str, LabPod], tmp_path: Path) -> None:
    nowhere = LabConfig(name="absent", slot=4)  # no containerd, no state dir
    with running_agent(nowhere, tmp_path / "agent.sock") as address, grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AgentStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            _inspect(stub, "targeted")
        code, details = rpc_status(err.value)
        assert code == grpc.StatusCode.UNAVAILABLE, details
        assert "unavailable" in details.lower()
