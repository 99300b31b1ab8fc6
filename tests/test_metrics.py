"""The agent's Prometheus metrics, scraped from the real agent on the lab: every RPC counted by
method and final status code (refusals by auth included, streams when they end), the Exec session
gauge, answers by source (CRI, and /proc when CRI is down) with the runtime's errors, and every
authorization decision, exactly as many as the audit log holds. The endpoint is loopback only."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from nsinspect.agent.main import parse_args
from nsinspect.agent.server import metrics, metrics_endpoint
from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc
from nsinspect.proto import exec_pb2_grpc, observe_pb2, observe_pb2_grpc
from nsinspect.proto.rpcerror import rpc_status
from testbed.agentproc import Labels, Samples, free_port, logged_metrics_url, running_agent, scrape
from testbed.execclient import Live, run, start
from testbed.lab.config import LabConfig
from testbed.lab.pods import LabPod

INSPECT, LIST = "/nsinspect.v1.Agent/Inspect", "/nsinspect.v1.Observe/ListProcesses"
EXEC, REFLECTION = "/nsinspect.v1.Exec/Exec", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@dataclass
class Agent:
    unix: str
    tcp: str
    url: str  # the metrics endpoint, as the agent logged it
    audit: Path

    def scrape(self) -> Samples:
        return scrape(self.url)

    def audited(self) -> Counter[tuple[str, str]]:
        lines = [json.loads(line) for line in self.audit.read_text().splitlines()]
        return Counter((e["rpc"], e["decision"]) for e in lines if e.get("event") == "call")


def key(**labels: str) -> Labels:
    return tuple(sorted(labels.items()))


def delta(before: Samples, after: Samples, name: str) -> dict[Labels, float]:
    """What changed in the series of sample `name` between two scrapes."""
    return {labels: value - before.get((n, labels), 0.0) for (n, labels), value in after.items()
            if n == name and value != before.get((n, labels), 0.0)}


def code_of(call: Callable[[], object]) -> grpc.StatusCode | None:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return rpc_status(err.value)[0]


def ref(name: str) -> pb.PodRef:
    return pb.PodRef(namespace="default", name=name)


@pytest.fixture(scope="module")
def agent(lab_cfg: LabConfig, canonical: dict[str, LabPod],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    tmp = tmp_path_factory.mktemp("metrics")
    port = free_port()  # loopback TCP without a token: refused by auth, which the metrics must show
    with running_agent(lab_cfg, tmp / "agent.sock", "--listen", f"tcp://127.0.0.1:{port}",
                       "--metrics-listen", "127.0.0.1:0", "--audit-log", str(tmp / "audit.log"),
                       log=tmp / "agent.log") as unix:
        yield Agent(unix, f"127.0.0.1:{port}", logged_metrics_url(tmp / "agent.log"), tmp / "audit.log")


@pytest.mark.lab
def test_rpcs_resolutions_and_decisions_are_counted(agent: Agent, canonical: dict[str, LabPod]) -> None:
    before = agent.scrape()
    with grpc.insecure_channel(agent.unix) as channel:
        stub = pb_grpc.AgentStub(channel)
        inspected = stub.Inspect(pb.InspectRequest(pod=ref("targeted")), timeout=30)
        assert inspected.pod.source == pb.SOURCE_CRI
        assert code_of(lambda: stub.Inspect(pb.InspectRequest(pod=ref("no-such-pod")), timeout=30)) == \
            grpc.StatusCode.NOT_FOUND
        listed = observe_pb2_grpc.ObserveStub(channel).ListProcesses(
            observe_pb2.ListProcessesRequest(pod=ref("targeted"), cpu_sample_ms=0), timeout=30)
        assert listed.processes
        ran = run(exec_pb2_grpc.ExecStub(channel), start("plain", "echo", "hello"), timeout=60)
        assert ran.exit is not None and ran.exit.code == 0 and ran.stdout == b"hello\n"
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        assert list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        unknown: Callable[..., object] = channel.unary_unary("/nsinspect.v1.Agent/NoSuchMethod")
        assert code_of(lambda: unknown(b"", timeout=30)) == grpc.StatusCode.UNIMPLEMENTED
    with grpc.insecure_channel(agent.tcp) as tcp:  # no token, no certificate: refused before the handler
        assert code_of(lambda: pb_grpc.AgentStub(tcp).Inspect(pb.InspectRequest(pod=ref("targeted")), timeout=30)) \
            == grpc.StatusCode.UNAUTHENTICATED
    after = agent.scrape()

    want = {key(method=INSPECT, code="OK"): 1, key(method=INSPECT, code="NOT_FOUND"): 1,
            key(method=INSPECT, code="UNAUTHENTICATED"): 1, key(method=LIST, code="OK"): 1,
            key(method=EXEC, code="OK"): 1, key(method=REFLECTION, code="OK"): 1,
            key(method=metrics.UNREGISTERED, code="UNIMPLEMENTED"): 1}
    assert delta(before, after, "nsinspect_rpc_total") == want
    timed = delta(before, after, "nsinspect_rpc_duration_seconds_count")
    assert timed == {labels: n for labels, n in want.items() if dict(labels)["method"] != metrics.UNREGISTERED}
    assert delta(before, after, "nsinspect_rpc_duration_seconds_sum")[key(method=EXEC, code="OK")] > 0

    resolved = delta(before, after, "nsinspect_resolutions_total")
    assert resolved.keys() == {key(source="cri")} and resolved[key(source="cri")] >= 3  # Inspect, ps, exec
    assert delta(before, after, "nsinspect_runtime_errors_total") == {}
    assert after[("nsinspect_exec_sessions_active", ())] == 0

    assert delta(before, after, "nsinspect_authz_decisions_total") == {
        key(rpc="Inspect", decision="allow"): 2,  # the unknown pod is checked before it is looked up
        key(rpc="Inspect", decision="deny"): 1, key(rpc="ListProcesses", decision="allow"): 1,
        key(rpc="Exec", decision="allow"): 1, key(rpc="ServerReflectionInfo", decision="allow"): 1}
    # one decision counted for each the audit log holds, since the agent started
    counted = {(dict(labels)["rpc"], dict(labels)["decision"]): value for (name, labels), value in after.items()
               if name == "nsinspect_authz_decisions_total"}
    assert counted == dict(agent.audited())


@pytest.mark.lab
def test_health_checks_are_counted_but_not_timed(agent: Agent) -> None:
    before = agent.scrape()
    with grpc.insecure_channel(agent.unix) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(3):
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=30).status == \
                health_pb2.HealthCheckResponse.SERVING
    after = agent.scrape()
    assert delta(before, after, "nsinspect_rpc_total") == {key(method=HEALTH_CHECK, code="OK"): 3}
    assert not [labels for name, labels in after if name.startswith("nsinspect_rpc_duration_seconds")
                and dict(labels).get("method", "").startswith("/grpc.health.v1.")]
    assert delta(before, after, "nsinspect_authz_decisions_total") == {}  # health needs no credentials


def wait_for(agent: Agent, want: Callable[[Samples], bool], timeout: float = 15.0) -> Samples:
    """Scrape until `want` holds (a cancelled stream is counted when the agent sees it go)."""
    deadline = time.monotonic() + timeout
    while not want(samples := agent.scrape()):
        assert time.monotonic() < deadline, "the metrics never got there"
        time.sleep(0.05)
    return samples


@pytest.mark.lab
def test_exec_sessions_gauge_and_cancelled_streams(agent: Agent) -> None:
    sessions = ("nsinspect_exec_sessions_active", ())
    assert agent.scrape()[sessions] == 0
    before = agent.scrape()
    with grpc.insecure_channel(agent.unix) as channel:
        stub = exec_pb2_grpc.ExecStub(channel)
        ended = Live(stub, start("plain", "cat", stdin=True))
        ended.wait_started()
        cut = Live(stub, start("plain", "sleep", "300"))
        cut.wait_started()
        assert agent.scrape()[sessions] == 2  # both are running: `cat` waits for its stdin to end
        ended.send(stdin=b"bye\n")
        ended.send(close_stdin=True)
        assert ended.wait_exit().code == 0 and ended.stdout == b"bye\n"
        assert agent.scrape()[sessions] == 1  # the stream ends after the session is torn down
        cut.cancel()
        after = wait_for(agent, lambda s: s[sessions] == 0 and s.get(
            ("nsinspect_rpc_total", key(method=EXEC, code="CANCELLED")), 0) > before.get(
            ("nsinspect_rpc_total", key(method=EXEC, code="CANCELLED")), 0))
    assert delta(before, after, "nsinspect_rpc_total") == {key(method=EXEC, code="OK"): 1,
                                                           key(method=EXEC, code="CANCELLED"): 1}


@pytest.mark.lab
def test_proc_fallback_and_runtime_errors(lab_cfg: LabConfig, canonical: dict[str, LabPod], tmp_path: Path) -> None:
    """No runtime at the CRI endpoint: the answer comes from /proc, and the failed CRI call is counted."""
    with running_agent(lab_cfg, tmp_path / "agent.sock", "--cri-endpoint", f"unix://{tmp_path}/no-runtime.sock",
                       "--metrics-listen", f"127.0.0.1:{free_port()}", log=tmp_path / "agent.log") as unix, \
            grpc.insecure_channel(unix) as channel:
        agent = Agent(unix, "", logged_metrics_url(tmp_path / "agent.log"), Path("/dev/null"))
        before = agent.scrape()
        answer = pb_grpc.AgentStub(channel).Inspect(pb.InspectRequest(pod=ref("targeted")), timeout=30)
        assert answer.pod.source == pb.SOURCE_PROC
        after = agent.scrape()
    assert delta(before, after, "nsinspect_rpc_total") == {key(method=INSPECT, code="OK"): 1}
    resolved = delta(before, after, "nsinspect_resolutions_total")
    assert resolved.keys() == {key(source="proc")} and resolved[key(source="proc")] >= 1
    errors = delta(before, after, "nsinspect_runtime_errors_total")
    assert errors.keys() == {key(kind="unavailable")} and errors[key(kind="unavailable")] >= 1


# -- the endpoint: loopback only -------------------------------------------------------------------------
@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "[::]:9464", "node.example:9464"])
def test_the_agent_refuses_a_non_loopback_metrics_address(listen: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "nsinspect.agent.main", "--listen", f"unix://{tmp_path}/a.sock",
                           "--metrics-listen", listen], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"refusing to serve metrics on {listen}: loopback addresses only" in done.stderr
    assert not (tmp_path / "a.sock").exists()  # refused before anything else


@pytest.mark.parametrize(("listen", "parsed"), [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:0", ("::1", 0)),
                                                ("localhost:9464", ("localhost", 9464)),
                                                ("127.3.4.5:1", ("127.3.4.5", 1))])
def test_loopback_addresses_are_accepted(listen: str, parsed: tuple[str, int]) -> None:
    assert metrics_endpoint.parse_listen(listen) == parsed


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", ":9464"])
def test_malformed_addresses_are_refused(listen: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        metrics_endpoint.parse_listen(listen)


def test_metrics_are_off_by_default_and_the_endpoint_serves_its_own_registry() -> None:
    assert parse_args([]).metrics_listen is None
    counters = metrics.Metrics()
    counters.resolution("proc")
    with pytest.raises(ValueError, match="loopback addresses only"):
        metrics_endpoint.serve_metrics(counters, "0.0.0.0:0")
    server = metrics_endpoint.serve_metrics(counters, "127.0.0.1:0")
    try:
        assert server.url.startswith("http://127.0.0.1:") and not server.url.startswith("http://127.0.0.1:0/")
        samples = scrape(server.url)
    finally:
        server.stop()
    assert samples[("nsinspect_resolutions_total", key(source="proc"))] == 1
    assert samples[("nsinspect_resolutions_total", key(source="cri"))] == 0
    assert not any(name.startswith("python_") or name.startswith("process_") for name, _ in samples)  # not global
