"""Attacks on the agent before authorization, against the real agent with the stand-in API server
answering its reviews: idle streams that would take every gRPC worker (Health/Check must answer
within 1 s whatever callers do), calls refused before authorization (each leaves exactly one audit
line), environment overrides in the exec audit (names always, secret-looking values masked), and
callers that drop off (CANCELLED, audited, and no error or traceback in the agent's log)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from nsinspect.agent.server.admission import Limits
from nsinspect.cli.agentclient import Credentials, open_channel
from nsinspect.proto import agent_pb2, observe_pb2, observe_pb2_grpc
from nsinspect.proto import exec_pb2 as pb
from nsinspect.proto import exec_pb2_grpc as pb_grpc
from nsinspect.proto.rpcerror import rpc_status
from testbed.agentproc import agent_argv, free_port, running_agent
from testbed.cluster.auth import USER_AUDIENCES, Token, User, rule
from testbed.cluster.standin import Cluster
from testbed.execclient import Live, run, start
from testbed.lab.config import LabConfig
from testbed.lab.pods import LabPod

pytestmark = pytest.mark.lab
Code = grpc.StatusCode
LIMITS = Limits()  # the agent runs with the default limits and --max-workers (16), --max-sessions (8)
READERS = ("reader-1", "reader-2", "reader-3", "reader-4")  # get pods, nothing more
TIMEOUT = "no `start` message within 5 s of opening the Exec stream"


@dataclass
class Env:
    tcp: str
    audit: Path
    log: Path
    proc: psutil.Process
    channels: dict[str, grpc.Channel] = field(default_factory=dict)  # "root" (unix), "dave", the readers

    def exec_stub(self, who: str) -> pb_grpc.ExecStub:
        return pb_grpc.ExecStub(self.channels[who])

    def audit_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def calls_since(self, mark: int) -> list[dict[str, Any]]:
        return [e for e in self.audit_lines()[mark:] if e["event"] == "call"]

    def fds(self) -> int:
        """The agent's open fds once they hold still for 0.3 s."""
        last, same, deadline = -1, 0, time.monotonic() + 10
        while same < 6 and time.monotonic() < deadline:
            now = len(os.listdir(f"/proc/{self.proc.pid}/fd"))
            same, last = (same + 1, now) if now == last else (0, now)
            time.sleep(0.05)
        return last

    def assert_serving(self) -> None:
        for who in ("root", "dave"):
            done = run(self.exec_stub(who), start("plain", "true"), timeout=30)
            assert done.exit is not None and done.exit.code == 0, who


@pytest.fixture(scope="module")
def env(lab_cfg: LabConfig, canonical: dict[str, LabPod], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp, port = tmp_path_factory.mktemp("admission"), free_port()
    with Cluster() as cluster, running_agent(
            lab_cfg, tmp / "agent.sock", "--listen", f"tcp://127.0.0.1:{port}", "--audit-log", str(tmp / "audit.log"),
            "--log-level", "debug", "--authn-cache-ttl", "1h", log=tmp / "agent.log",
            kubeconfig=cluster.kubeconfig(tmp / "agent.kubeconfig", "agent-token")) as unix:
        authority = cluster.authority
        for name in READERS:
            authority.add_token(Token(f"{name}-token", User(name, f"uid-{name}", ("readers",)), USER_AUDIENCES))
        authority.add_token(Token("dave-token", User("dave", "uid-dave", ("exec-only",)), USER_AUDIENCES))
        authority.grant("group:readers", rule("get list", "pods"))
        authority.grant("group:exec-only", rule("get list", "pods"), rule("create", "pods/exec"))
        proc = next(p for p in psutil.process_iter(["cmdline"]) if unix in (p.info["cmdline"] or []))
        e = Env(f"127.0.0.1:{port}", tmp / "audit.log", tmp / "agent.log", proc)
        e.channels["root"] = grpc.insecure_channel(unix)
        for who in ("dave", *READERS):
            e.channels[who] = open_channel(e.tcp, Credentials(token=f"{who}-token"))
        for who, channel in e.channels.items():  # connected, and each token reviewed, before any fd is counted
            ps = observe_pb2_grpc.ObserveStub(channel).ListProcesses
            assert ps(observe_pb2.ListProcessesRequest(pod=agent_pb2.PodRef(name="plain")), timeout=30).processes, who
        e.assert_serving()
        yield e
        for channel in e.channels.values():
            channel.close()


@contextmanager
def probing(env: Env) -> Iterator[list[float]]:
    """Health/Check on the unix socket every 100 ms meanwhile; every one answers within 1 s."""
    took: list[float] = []
    stop = threading.Event()
    health = health_pb2_grpc.HealthStub(env.channels["root"])

    def probe() -> None:
        while not stop.wait(0.1):
            began = time.monotonic()
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1
            took.append(time.monotonic() - began)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        yield took
    finally:
        stop.set()
        prober.join()
    assert len(took) >= 5 and max(took) < 1.0, sorted(took)[-5:]


def silent(stop: threading.Event) -> Iterator[Any]:
    """A request stream that sends nothing until `stop`."""
    stop.wait(60)
    yield from ()


# -- 1. workers --------------------------------------------------------------------------------------------
ATTACKS = {"16 streams from a reader": (READERS[:1], 16), "100 from a reader": (READERS[:1], 100),
           "100 from four readers": (READERS, 100), "100 from root on the unix socket": (("root",), 100)}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_idle_exec_streams_cannot_starve_health(env: Env, attack: str) -> None:
    callers, count = ATTACKS[attack]
    pending = min(LIMITS.total, LIMITS.per_caller * len(callers))
    fds, mark, stop = env.fds(), len(env.audit_lines()), threading.Event()
    with probing(env):
        calls = [env.exec_stub(callers[i % len(callers)]).Exec(silent(stop), timeout=30) for i in range(count)]
        codes = Counter(call.code() for call in calls)  # the refused at once, the pending after 5 s
        stop.set()
    assert codes == {Code.RESOURCE_EXHAUSTED: count - pending, Code.INVALID_ARGUMENT: pending}
    assert all("pending streams" in c.details() for c in calls if c.code() == Code.RESOURCE_EXHAUSTED)
    audited = env.calls_since(mark)
    assert len(audited) == count  # one line per call, refused at once or after the wait
    assert Counter((e["rpc"], e["decision"], e["code"]) for e in audited) == {
        ("Exec", "deny", "RESOURCE_EXHAUSTED"): count - pending, ("Exec", "deny", "INVALID_ARGUMENT"): pending}
    users = {"system:node:local-root" if c == "root" else c for c in callers}
    assert {e["caller"]["user"] for e in audited} == users
    assert {e["reason"] for e in audited if e["code"] == "INVALID_ARGUMENT"} == {TIMEOUT}
    env.assert_serving()
    assert env.fds() == fds


def test_health_answers_with_every_session_and_pending_stream_taken(env: Env) -> None:
    """--max-sessions sessions, --max-pending-streams idle streams and a reflection stream (root's),
    all at once: the reserved workers are still free."""
    stop = threading.Event()
    sessions = [Live(env.exec_stub("root"), start("plain", "sleep", "60")) for _ in range(8)]
    try:
        for live in sessions:
            live.wait_started()
        with probing(env):
            reflection = reflection_pb2_grpc.ServerReflectionStub(env.channels["root"])
            held = [reflection.ServerReflectionInfo(silent(stop), timeout=30)]
            held += [env.exec_stub(READERS[i % 2]).Exec(silent(stop), timeout=30) for i in range(LIMITS.total)]
            time.sleep(2)
            [refused] = [c for c in held if c.done()]  # the one too many
            assert refused.code() == Code.RESOURCE_EXHAUSTED
            stop.set()
            assert all(call.code() for call in held)  # every one ended (half-closed), its stream released
    finally:
        stop.set()
        for live in sessions:
            live.cancel()


def test_idle_reflection_streams_are_pending_streams(env: Env) -> None:
    stop, mark = threading.Event(), len(env.audit_lines())
    reflection = reflection_pb2_grpc.ServerReflectionStub(env.channels["root"])
    with probing(env):
        calls = [reflection.ServerReflectionInfo(silent(stop), timeout=30) for _ in range(10)]
        time.sleep(1)
        assert [c.done() for c in calls].count(False) == LIMITS.per_caller  # open, each holding a worker
        assert [c.code() for c in calls if c.done()] == [Code.RESOURCE_EXHAUSTED] * (10 - LIMITS.per_caller)
        for call in calls:
            call.cancel()
    assert Counter((e["decision"], e["code"]) for e in env.calls_since(mark)) == {
        ("allow", "OK"): LIMITS.per_caller, ("deny", "RESOURCE_EXHAUSTED"): 10 - LIMITS.per_caller}
    time.sleep(0.2)  # the cancelled streams are released as their calls end
    listed = list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                  timeout=10))
    assert "nsinspect.v1.Exec" in {s.name for s in listed[0].list_services_response.service}


def test_too_few_workers_for_the_limits_is_refused_at_start(lab_cfg: LabConfig, tmp_path: Path) -> None:
    argv = agent_argv(lab_cfg, tmp_path / "a.sock", "--max-workers", "15")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "nsinspect-agent: --max-workers 15 is too few: each exec session (--max-sessions 8) and each pending "
        "stream (--max-pending-streams 6) holds a worker thread, and 2 are kept for health checks and short calls: "
        "at least 16")


# -- 2. the audit ------------------------------------------------------------------------------------------
def eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()


def refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode | None, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return rpc_status(err.value)


def test_every_exec_refused_before_authorization_is_audited_once(env: Env) -> None:
    stub, stop = env.exec_stub("dave"), threading.Event()
    plain = {"namespace": "default", "name": "plain", "uid": ""}
    cases: list[tuple[Callable[[], object], str, dict[str, str] | None]] = [
        (lambda: run(stub, start("plain", "true", container="Bad_Name")), "invalid container name", plain),
        (lambda: run(stub, start("plain")), "a command is required (argv is empty)", plain),
        (lambda: list(stub.Exec(iter([pb.ExecRequest(stdin=b"x")]), timeout=30)),
         "the first message of an Exec stream must be `start`", None),
        (lambda: list(stub.Exec(silent(stop), timeout=30)), TIMEOUT, None)]
    for call, reason, target in cases:
        mark = len(env.audit_lines())
        code, details = refusal(call)
        [line] = env.calls_since(mark)
        assert code == Code.INVALID_ARGUMENT and reason in details and line["reason"] == details
        assert (line["rpc"], line["decision"], line["code"], line["caller"]["user"]) == (
            "Exec", "deny", "INVALID_ARGUMENT", "dave")
        assert line.get("target") == target
    stop.set()
    mark = len(env.audit_lines())
    env.assert_serving()  # an admitted call: one line too (root's and dave's)
    assert [(e["decision"], e["caller"]["user"]) for e in env.calls_since(mark)] == [
        ("allow", "system:node:local-root"), ("allow", "dave")]


def test_exec_audit_shows_the_environment_overrides(env: Env) -> None:
    secrets = {"API_TOKEN": "tok-5f1c", "DB_PASSWORD": "hunter2", "aws_secret_access_key": "wJalrXUt",
               "TLS_PRIVATE_KEY": "-----BEGIN"}
    shown = {"LD_PRELOAD": "/tmp/evil.so", "PROXY": "http://user:[masked]@proxy:3128", "MODE": "x y"}
    sent = {**secrets, "LD_PRELOAD": "/tmp/evil.so", "PROXY": "http://user:pw-77@proxy:3128", "MODE": "x y"}
    done = run(env.exec_stub("dave"), start("plain", "true", env=sent))
    assert done.exit is not None and done.started is not None
    lines = [e for e in env.audit_lines() if e.get("session") == done.started.session]
    assert [e["event"] for e in lines] == ["exec.start", "exec.end"]
    for line in lines:
        assert line["env"] == {**shown, **dict.fromkeys(secrets, "[masked]")}
    assert not [v for v in (*secrets.values(), "pw-77") if v in env.audit.read_text()]


# -- 3. callers that drop off ------------------------------------------------------------------------------
def test_a_caller_that_drops_off_is_cancelled_not_an_error(env: Env) -> None:
    offset, mark = env.log.stat().st_size, len(env.audit_lines())

    def broken() -> Iterator[pb.ExecRequest]:
        time.sleep(0.2)  # the agent waits for `start` meanwhile: a pending stream
        yield from ()
        raise RuntimeError("the client's request stream broke")

    for who in ("dave", "root"):
        code, _ = refusal(lambda w=who: list(env.exec_stub(w).Exec(broken(), timeout=30)))  # type: ignore[misc]
        assert code in (Code.UNKNOWN, Code.CANCELLED)  # what the client's own library makes of it
    for delay in (0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1):  # each stage of the start, or most of them
        live = Live(env.exec_stub("dave"), start("plain", "sleep", "31"))
        time.sleep(delay)
        live.cancel()
    live = Live(env.exec_stub("dave"), start("plain", "sleep", "32"))
    live.wait_started()
    live.cancel()
    reflection = reflection_pb2_grpc.ServerReflectionStub(env.channels["root"])
    call = reflection.ServerReflectionInfo(silent(threading.Event()), timeout=30)
    time.sleep(0.2)
    call.cancel()

    def events(kind: str) -> list[dict[str, Any]]:
        return [e for e in env.audit_lines()[mark:] if e["event"] == kind]

    assert eventually(lambda: len(events("call")) == 2 + 7 + 1 + 1)  # one line for every call, no more
    assert eventually(lambda: len(events("exec.end")) == len(events("exec.start")) >= 1)
    gone = [e for e in events("call") if e["code"] == "CANCELLED"]
    assert {e["caller"]["user"] for e in gone} >= {"dave", "system:node:local-root"}
    assert {e["reason"] for e in gone} == {"the caller went away before sending `start`"}
    assert [e["status"] for e in events("exec.end") if e["argv"] == ["sleep", "32"]] == ["CANCELLED"]
    env.assert_serving()
    log = env.log.read_bytes()[offset:].decode()
    levels = Counter(json.loads(line)["level"] for line in log.splitlines() if line.startswith("{"))
    assert "Traceback" not in log and not levels.keys() & {"error", "critical"}, log[-2000:]
    assert all(line.startswith("{") for line in log.splitlines()), log[-2000:]  # nothing printed around the log
