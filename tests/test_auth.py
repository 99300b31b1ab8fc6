"""Who may call the agent, end to end: the real agent on the lab, the stand-in API server answering
its TokenReviews and SubjectAccessReviews from test users and RBAC-like grants, and the CLI through
port-forward, directly over TCP with --token, and over mTLS. Every refusal is audited; no token is
ever written anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from kubernetes import client

from nsinspect.agent.server.app import bind_address
from nsinspect.cli.agentclient import Credentials, open_channel
from nsinspect.proto import agent_pb2 as pb
from nsinspect.proto import agent_pb2_grpc as pb_grpc
from nsinspect.proto import exec_pb2_grpc, observe_pb2, observe_pb2_grpc
from nsinspect.proto.rpcerror import rpc_status
from testbed import toolbox
from testbed.agentproc import free_port, running_agent
from testbed.cluster.auth import ALICE, USER_AUDIENCES, Decision, Token, User, rule
from testbed.cluster.fixtures import client_for
from testbed.cluster.standin import Cluster
from testbed.execclient import run, start
from testbed.lab.config import LabConfig
from testbed.lab.pods import LabPod
from tests.tlscerts import Pki

pytestmark = pytest.mark.lab
Code = grpc.StatusCode
WEB = f"auth-web-{uuid.uuid4().hex[:6]}"  # the lab is shared: a name no other test (or run) uses

# Users of this module's stand-in, each a token good for the agent's audience.
NOBODY = User("nobody", "uid-nobody")  # authenticated, granted nothing
DAVE = User("dave", "uid-dave", ("exec-only",))  # get pods, create pods/exec
ERIN = User("erin", "uid-erin", ("nsenter",))  # that, plus create pods/nsenter and get nodes/nsmap
TOKENS = {"alice": "alice-token", "nobody": "nobody-token-5f1c", "dave": "dave-token-93ab", "erin": "erin-token-77d0",
          "alice-other": "alice-other-audience-token", "admin": "admin-token", "greg": "greg-token-1e2d"}


@dataclass
class Env:
    cluster: Cluster
    tcp: str  # 127.0.0.1:PORT, loopback TCP: callers need credentials
    unix: str  # unix:///...: callers are root
    audit: Path
    log: Path
    tmp: Path

    def audit_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def kubeconfig(self, who: str) -> Path:
        return self.cluster.kubeconfig(self.tmp / f"{who}.kubeconfig", TOKENS[who])


def setup_users(cluster: Cluster) -> None:
    auth = cluster.authority
    for user, key in ((NOBODY, "nobody"), (DAVE, "dave"), (ERIN, "erin"), (User("greg", "uid-greg"), "greg")):
        auth.add_token(Token(TOKENS[key], user, USER_AUDIENCES))
    auth.add_token(Token(TOKENS["alice-other"], ALICE, ("some-other-service",)))
    auth.grant("user:alice", rule("get create", "pods/portforward", namespaces=["nsinspect-system"],
                                  binding="agent-access", role="nsinspect-agent-access"))
    auth.grant("group:exec-only", rule("get list", "pods"), rule("create", "pods/exec"))
    auth.grant("group:nsenter", rule("get list", "pods"), rule("create", "pods/exec pods/nsenter"),
               rule("get", "nodes/nsmap"))


@pytest.fixture(scope="module")
def env(lab_cfg: LabConfig, canonical: dict[str, LabPod], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("auth")
    port = free_port()
    tools = toolbox.build(toolbox.default_dir(lab_cfg))
    with Cluster(lab_cfg) as cluster, \
            running_agent(lab_cfg, tmp / "agent.sock", "--listen", f"tcp://127.0.0.1:{port}", "--toolbox", str(tools),
                          "--audit-log", str(tmp / "audit.log"), "--log-level", "debug", "--authz-cache-ttl", "1s",
                          log=tmp / "agent.log",
                          kubeconfig=cluster.kubeconfig(tmp / "agent.kubeconfig", "agent-token")) as unix:
        setup_users(cluster)
        cluster.register_agent("lab-node", "127.0.0.1", port)
        api = client_for(cluster, "admin-token", tmp / "admin.kubeconfig")
        core: Any = client.CoreV1Api(api)
        core.create_namespaced_pod("default", {"metadata": {"name": WEB}, "spec": {"containers": [
            {"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]}})
        deadline = time.monotonic() + 30
        while core.read_namespaced_pod(WEB, "default").status.phase != "Running":
            assert time.monotonic() < deadline, f"pod {WEB} did not start"
            time.sleep(0.1)
        api.close()
        yield Env(cluster, f"127.0.0.1:{port}", unix, tmp / "audit.log", tmp / "agent.log", tmp)


def nsinspect(*args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NSINSPECT_AGENT", "NSINSPECT_TOKEN")}
    if kubeconfig:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run([sys.executable, "-m", "nsinspect.cli.main", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env=env)


def status(call: Callable[[], Any]) -> tuple[grpc.StatusCode | None, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return rpc_status(err.value)


def channel_for(env: Env, who: str | None) -> grpc.Channel:
    return open_channel(env.tcp, Credentials(token=TOKENS[who]) if who else Credentials())


def ref(name: str = "plain") -> pb.PodRef:
    return pb.PodRef(namespace="default", name=name)


def every_rpc(channel: grpc.Channel, pod: str = "plain") -> dict[str, Callable[[], Any]]:
    """One call of each RPC the agent serves (but health), on `pod`."""
    agent, observe = pb_grpc.AgentStub(channel), observe_pb2_grpc.ObserveStub(channel)
    ex = exec_pb2_grpc.ExecStub(channel)
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    return {
        "Inspect": lambda: agent.Inspect(pb.InspectRequest(pod=ref(pod)), timeout=30),
        "NodeMap": lambda: agent.NodeMap(pb.NodeMapRequest(types=["net"]), timeout=30),
        "ListProcesses": lambda: observe.ListProcesses(observe_pb2.ListProcessesRequest(pod=ref(pod), cpu_sample_ms=0),
                                                       timeout=30),
        "NetInfo": lambda: observe.NetInfo(observe_pb2.NetInfoRequest(pod=ref(pod)), timeout=30),
        "Exec": lambda: run(ex, start(pod, "true"), timeout=30),
        "ServerReflectionInfo": lambda: list(refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30)),
    }


# -- authentication -------------------------------------------------------------------------------------
def test_no_credentials_get_nothing_but_health(env: Env) -> None:
    with channel_for(env, None) as channel:
        for name, rpc in every_rpc(channel).items():
            code, details = status(rpc)
            assert code == Code.UNAUTHENTICATED, name
            assert details.startswith("no credentials: send a bearer token"), details
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # Watch is a stream that would hold one of the agent's workers for as long as a caller likes.
        code, _ = status(lambda: next(health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(),
                                                                               timeout=10)))
        assert code == Code.UNAUTHENTICATED
        inspect = pb_grpc.AgentStub(channel).Inspect
        for header in ("Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer ", "Bearer a b", "bearer"):
            metadata = (("authorization", header),)
            code, details = status(partial(inspect, pb.InspectRequest(pod=ref()), timeout=10, metadata=metadata))
            assert code == Code.UNAUTHENTICATED and "malformed authorization metadata" in details, header
        code, _ = status(lambda: inspect(pb.InspectRequest(pod=ref()), timeout=10, metadata=(
            ("authorization", "Bearer admin-token"), ("authorization", "Bearer alice-token"))))
        assert code == Code.UNAUTHENTICATED  # two identities: neither is taken


def test_tokens_for_another_audience_or_nobody_are_refused(env: Env) -> None:
    for token, why in ((TOKENS["alice-other"], 'token audiences ["some-other-service"] is invalid for the target '
                                               'audiences ["nsinspect"]'),
                       ("agent-token", 'is invalid for the target audiences ["nsinspect"]'),  # the API's only
                       ("made-up-token", "token lookup failed")):
        with open_channel(env.tcp, Credentials(token=token)) as channel:
            for name, rpc in every_rpc(channel).items():
                code, details = status(rpc)
                assert code == Code.UNAUTHENTICATED, name
                assert "did not accept the bearer token for audience 'nsinspect'" in details and why in details
                assert token not in details


def test_the_unix_socket_is_root(env: Env) -> None:
    with grpc.insecure_channel(env.unix) as channel:
        for name, rpc in every_rpc(channel).items():
            assert rpc() is not None, name
    mode = os.stat(env.unix.removeprefix("unix://")).st_mode & 0o777
    assert mode == 0o600  # connect(2) needs write permission: root only
    calls = [e for e in env.audit_lines() if e["event"] == "call" and e["caller"] and e["caller"]["via"] == "unix"]
    assert {e["caller"]["user"] for e in calls} == {"system:node:local-root"}
    assert {e["rpc"] for e in calls} >= {"Inspect", "NodeMap", "ListProcesses", "NetInfo", "Exec",
                                         "ServerReflectionInfo"}


# -- authorization --------------------------------------------------------------------------------------
def test_every_rpc_is_checked_on_its_target(env: Env) -> None:
    expected = {"Inspect": "get pods on pod default/plain", "ListProcesses": "get pods on pod default/plain",
                "NetInfo": "get pods on pod default/plain", "Exec": "create pods/exec on pod default/plain",
                "NodeMap": "get nodes/nsmap on node lab-node"}
    with channel_for(env, "nobody") as channel:
        for name, rpc in every_rpc(channel).items():
            code, details = status(rpc)
            assert code == Code.PERMISSION_DENIED, name
            if name != "ServerReflectionInfo":
                assert details == f'user "nobody" may not {expected[name]} (needed for {name})'
    with channel_for(env, "admin") as channel:  # system:masters
        for name, rpc in every_rpc(channel).items():
            if name != "ServerReflectionInfo":
                assert rpc() is not None, name
        # The schema is for grpcurl on the node: a stream held open would hold one of the workers.
        code, details = status(every_rpc(channel)["ServerReflectionInfo"])
        assert code == Code.PERMISSION_DENIED
        assert details == "ServerReflectionInfo is served to root on the node only (the agent's unix socket)"


def test_a_reader_may_look_but_not_exec_through_port_forward(env: Env) -> None:
    alice = env.kubeconfig("alice")
    for command in (["ps", WEB], ["ns", WEB], ["net", WEB]):
        result = nsinspect(*command, kubeconfig=alice)
        assert result.returncode == 0, result.stderr
    refused = nsinspect("exec", WEB, "--", "id", kubeconfig=alice)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (f'error: user "alice" may not create pods/exec on pod default/{WEB} (needed for Exec) '
                              "(PERMISSION_DENIED)\n")
    nsmap = nsinspect("nsmap", "--node", "lab-node", kubeconfig=alice)
    assert nsmap.returncode == 1 and 'may not get nodes/nsmap on node lab-node' in nsmap.stderr


def test_a_reader_may_look_but_not_exec_directly_with_a_token(env: Env) -> None:
    direct = ("--agent", env.tcp, "--token", TOKENS["alice"])
    ps = nsinspect("ps", "plain", *direct)
    assert ps.returncode == 0 and "sleep" in ps.stdout, ps.stderr
    refused = nsinspect("exec", "plain", *direct, "--", "id")
    assert refused.returncode == 1
    assert 'user "alice" may not create pods/exec on pod default/plain (needed for Exec)' in refused.stderr
    assert TOKENS["alice"] not in ps.stdout + ps.stderr + refused.stdout + refused.stderr
    no_token = nsinspect("ps", "plain", "--agent", env.tcp)
    assert no_token.returncode == 1 and "no credentials" in no_token.stderr and "UNAUTHENTICATED" in no_token.stderr


def test_nsenter_is_a_verb_of_its_own(env: Env) -> None:
    # A subset of namespaces leaves the command in some of the node's (its pids, its network);
    # another root is any directory the agent can reach.
    elevated: dict[str, dict[str, Any]] = {
        "--privileged": {"privileged": True}, "--user": {"user": 0}, "--group": {"group": 0},
        "--tools, --ns": {"tools": True, "namespaces": ["pid", "net"]}, "--ns": {"namespaces": ["net"]},
        "--root": {"root": "/"}}
    with channel_for(env, "dave") as dave, channel_for(env, "erin") as erin:
        result = run(exec_pb2_grpc.ExecStub(dave), start("nonroot", "id", "-u"))
        assert result.exit is not None and result.exit.code == 0 and result.stdout == b"1000\n"
        for flag, fields in elevated.items():
            request = start("nonroot", "id", "-u", **fields)
            code, details = status(partial(run, exec_pb2_grpc.ExecStub(dave), request))
            assert code == Code.PERMISSION_DENIED, flag
            assert details == (f'user "dave" may not create pods/nsenter on pod default/nonroot '
                               f"(needed for Exec with {flag})")
            done = run(exec_pb2_grpc.ExecStub(erin), start("nonroot", "id", "-u", **fields))
            assert done.exit is not None and done.exit.code == 0, (flag, done.stderr)
        nodemap = pb_grpc.AgentStub(erin).NodeMap(pb.NodeMapRequest(types=["net"]), timeout=30)
        assert nodemap.namespaces
    sessions = [e for e in env.audit_lines() if e["event"] == "exec.start" and e["pod"]["name"] == "nonroot"]
    assert {"dave", "erin"} <= {e["caller"] for e in sessions}


def test_the_reviewers_reason_is_passed_on(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    authority = env.cluster.authority
    plain = authority.authorize

    def freeze(user: str, groups: Any, verb: str, **attrs: Any) -> Decision:
        if user == "erin" and attrs.get("subresource") == "exec":
            return Decision(False, "denied: change freeze until Monday (policy CF-7)")
        return plain(user, groups, verb, **attrs)

    monkeypatch.setattr(authority, "authorize", freeze)
    with channel_for(env, "erin") as erin:
        code, details = status(lambda: run(exec_pb2_grpc.ExecStub(erin), start("shared", "true")))
    assert code == Code.PERMISSION_DENIED
    assert details == ('user "erin" may not create pods/exec on pod default/shared (needed for Exec): '
                       "denied: change freeze until Monday (policy CF-7)")


def test_decisions_are_cached_briefly(env: Env) -> None:
    """--authz-cache-ttl 1s: a revoked grant still works for up to a second, then no more."""
    authority = env.cluster.authority
    authority.grant("user:greg", rule("get", "pods", names=["hostnet"]))
    with channel_for(env, "greg") as greg:
        inspect = pb_grpc.AgentStub(greg).Inspect
        assert inspect(pb.InspectRequest(pod=ref("hostnet")), timeout=30).pod.name == "hostnet"
        with authority.lock:
            authority.grants = [(s, r) for s, r in authority.grants if s != "user:greg"]
        assert inspect(pb.InspectRequest(pod=ref("hostnet")), timeout=30).pod.name == "hostnet"  # cached
        time.sleep(1.2)
        code, _ = status(lambda: inspect(pb.InspectRequest(pod=ref("hostnet")), timeout=30))
        assert code == Code.PERMISSION_DENIED


def test_an_exec_credential_plugins_token_is_sent(env: Env, tmp_path: Path) -> None:
    """Tokens from exec credential plugins (cloud logins, OIDC helpers) reach the agent as well."""
    plugin = tmp_path / "login.sh"
    plugin.write_text('#!/bin/sh\necho \'{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", '
                      f'"status": {{"token": "{TOKENS["dave"]}"}}}}\'\n')
    plugin.chmod(0o700)
    env.cluster.authority.grant("user:dave", rule("get create", "pods/portforward", namespaces=["nsinspect-system"]))
    kubeconfig = tmp_path / "exec.kubeconfig"
    config = yaml.safe_load(env.kubeconfig("alice").read_text())
    config["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin),
                                           "interactiveMode": "Never"}}
    kubeconfig.write_text(yaml.safe_dump(config))
    done = nsinspect("exec", WEB, "--", "id", "-un", kubeconfig=kubeconfig)
    assert done.returncode == 0 and done.stdout == "root\n", done.stderr
    assert TOKENS["dave"] not in done.stdout + done.stderr
    [session] = [e for e in env.audit_lines() if e["event"] == "exec.start" and e["pod"]["name"] == WEB]
    assert session["caller"] == "dave"


def test_a_kubeconfig_without_a_token_is_explained(env: Env, tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.client("alice", ["developers"])
    kubeconfig = tmp_path / "cert.kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": env.cluster.url, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    result = nsinspect("ps", WEB, kubeconfig=kubeconfig)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: the nsinspect agent needs a bearer token, and the kubeconfig user has none "
                           "(it authenticates with a client certificate). Pass one with --token TOKEN")
    assert "kubectl create token" in line and "--audience nsinspect" in line


def test_the_working_directory_is_entered_as_the_container(env: Env) -> None:
    """A plain exec may name a working directory, and reaches no further than the container could:
    not the node's files through /proc/PID/cwd of a node process (the container has no SYS_PTRACE)."""
    escape = f"/proc/{os.getpid()}/cwd"  # this test's own: a root process of the node
    assert os.path.isdir(escape)
    with channel_for(env, "dave") as dave:
        ex = exec_pb2_grpc.ExecStub(dave)
        moved = run(ex, start("hostpid", "pwd", workdir="/tmp"))
        assert moved.exit is not None and moved.exit.code == 0 and moved.stdout == b"/tmp\n", moved.stderr
        code, details = status(partial(run, ex, start("hostpid", "ls", workdir=escape)))
        assert code == Code.INVALID_ARGUMENT
        assert details == f"working directory {escape!r} in the container: Permission denied"
    started = [e for e in env.audit_lines() if e["event"] == "exec.start" and e.get("workdir") == escape]
    assert started and started[-1]["caller"] == "dave"


# -- mTLS ------------------------------------------------------------------------------------------------
def test_mtls(env: Env, lab_cfg: LabConfig, tmp_path: Path) -> None:
    pki, rogue = Pki(tmp_path / "pki"), Pki(tmp_path / "rogue")
    server_cert, server_key = pki.server("127.0.0.1")
    port = free_port()
    env.cluster.authority.grant("group:sre", rule("get", "pods"), rule("create", "pods/exec"))
    with running_agent(lab_cfg, tmp_path / "tls.sock", "--listen", f"tcp://127.0.0.1:{port}",
                       "--tls-cert", str(server_cert), "--tls-key", str(server_key), "--tls-client-ca", str(pki.ca),
                       "--audit-log", str(tmp_path / "audit.log"),
                       kubeconfig=env.cluster.kubeconfig(tmp_path / "agent.kubeconfig", "agent-token")) as unix:
        address = f"127.0.0.1:{port}"

        def cli(cert: tuple[Path, Path] | None, *args: str, ca: Path = pki.ca) -> subprocess.CompletedProcess[str]:
            tls = ["--tls-ca", str(ca), *(["--tls-cert", str(cert[0]), "--tls-key", str(cert[1])] if cert else [])]
            return nsinspect(*args[:2], "--agent", address, *tls, *args[2:])

        alice = pki.client("alice", ["developers"])
        assert cli(alice, "ps", "plain").returncode == 0
        refused = cli(alice, "exec", "plain", "--", "true")
        assert refused.returncode == 1
        assert 'user "alice" may not create pods/exec on pod default/plain (needed for Exec)' in refused.stderr
        twice = pki.client("alice", ["developers"], also_cn="admin")  # which one is the user? neither
        refused = cli(twice, "ps", "plain")
        assert refused.returncode == 1
        assert "the client certificate has more than one common name (CN) (UNAUTHENTICATED)" in refused.stderr
        frank = pki.client("frank", ["ops", "sre"])  # the second O is a group too, authorized through SAR
        done = cli(frank, "exec", "plain", "--", "id", "-un")
        assert done.returncode == 0 and done.stdout == "root\n", done.stderr
        # A certificate from another CA, none at all, or a server we do not trust: no connection.
        for cert, ca in ((rogue.client("alice", ["developers"]), pki.ca), (None, pki.ca), (alice, rogue.ca)):
            failed = cli(cert, "ps", "plain", ca=ca)
            [line] = failed.stderr.splitlines()
            assert failed.returncode == 1 and line.startswith(
                ("error: no TLS connection to the agent", "error: cannot reach the agent")), line
        # A token, when sent, names the caller (the certificate is the transport's).
        both = nsinspect("exec", "plain", "--agent", address, "--tls-ca", str(pki.ca), "--tls-cert", str(frank[0]),
                         "--tls-key", str(frank[1]), "--token", TOKENS["alice"], "--", "true")
        assert both.returncode == 1 and 'user "alice" may not' in both.stderr
        with grpc.insecure_channel(unix) as channel:  # the agent serves on
            assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status == 1
        lines = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
        x509 = [e for e in lines if e["event"] == "call" and (e.get("caller") or {}).get("via") == "x509"]
        assert {(e["caller"]["user"], tuple(e["caller"]["groups"]), e["decision"]) for e in x509} >= {
            ("alice", ("developers", "system:authenticated"), "allow"),
            ("alice", ("developers", "system:authenticated"), "deny"),
            ("frank", ("ops", "sre", "system:authenticated"), "allow")}
    assert bind_address("tcp://0.0.0.0:7443", tls=True) == "0.0.0.0:7443"  # TLS may leave loopback
    with pytest.raises(ValueError, match="loopback"):
        bind_address("tcp://0.0.0.0:7443")


# -- the API server ----------------------------------------------------------------------------------------
def test_the_api_server_going_down_fails_closed(lab_cfg: LabConfig, canonical: dict[str, LabPod],
                                                tmp_path: Path) -> None:
    port = free_port()
    with Cluster() as api, running_agent(lab_cfg, tmp_path / "a.sock", "--listen", f"tcp://127.0.0.1:{port}",
                                         "--audit-log", str(tmp_path / "audit.log"), "--api-timeout", "2s",
                                         kubeconfig=api.kubeconfig(tmp_path / "agent.kubeconfig", "agent-token")):
        address = f"127.0.0.1:{port}"
        with open_channel(address, Credentials(token="alice-token")) as alice:
            inspect = pb_grpc.AgentStub(alice).Inspect
            assert inspect(pb.InspectRequest(pod=ref("plain")), timeout=30).pod.name == "plain"
            api.server.stop()
            code, details = status(lambda: inspect(pb.InspectRequest(pod=ref("shared")), timeout=30))
            assert code == Code.UNAVAILABLE and details.startswith("cannot verify permission: the API server did not "
                                                                  "answer"), details
        with open_channel(address, Credentials(token="bob-token")) as bob:  # never verified: not cached
            code, details = status(lambda: pb_grpc.AgentStub(bob).Inspect(pb.InspectRequest(pod=ref()), timeout=30))
            assert code == Code.UNAVAILABLE and details.startswith("cannot verify the bearer token"), details
    lines = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    assert [(e["decision"], e["code"]) for e in lines if e["event"] == "call"] == [
        ("allow", "OK"), ("error", "UNAVAILABLE"), ("deny", "UNAVAILABLE")]


def test_without_an_api_server_only_root_is_served(lab_cfg: LabConfig, canonical: dict[str, LabPod],
                                                   tmp_path: Path) -> None:
    port = free_port()
    with running_agent(lab_cfg, tmp_path / "a.sock", "--listen", f"tcp://127.0.0.1:{port}",
                       "--audit-log", str(tmp_path / "audit.log")) as unix:
        with open_channel(f"127.0.0.1:{port}", Credentials(token="admin-token")) as channel:
            code, details = status(lambda: pb_grpc.AgentStub(channel).Inspect(pb.InspectRequest(pod=ref()), timeout=30))
        assert code == Code.UNAUTHENTICATED
        assert details == ("cannot verify bearer tokens: this agent has no API server to ask (start it with "
                           "--kubeconfig FILE, or run it in a pod); use its unix socket as root")
        with grpc.insecure_channel(unix) as channel:
            assert pb_grpc.AgentStub(channel).Inspect(pb.InspectRequest(pod=ref()), timeout=30).pod.name == "plain"


# -- audit -------------------------------------------------------------------------------------------------
def test_refusals_are_audited_and_tokens_never_logged(env: Env) -> None:
    """Runs last in this module: checks its own refusals, then every line any test here made."""
    refusals = []
    with channel_for(env, None) as anonymous:
        refusals.append(status(every_rpc(anonymous)["ListProcesses"]))
    with channel_for(env, "alice-other") as wrong:
        refusals.append(status(every_rpc(wrong)["NetInfo"]))
    with channel_for(env, "nobody") as nobody:
        refusals.append(status(every_rpc(nobody, "hostpid")["Inspect"]))
    time.sleep(0.2)
    lines = env.audit_lines()
    calls = [e for e in lines if e["event"] == "call"]
    for (code, details), rpc in zip(refusals, ("ListProcesses", "NetInfo", "Inspect"), strict=True):
        [entry] = [e for e in calls if e["reason"] == details and e["rpc"] == rpc][-1:]
        assert entry["decision"] == "deny" and code is not None and entry["code"] == code.name
        assert entry["peer"].startswith("ipv4:127.0.0.1:") and entry["time"]
    assert calls[-1]["target"] == {"namespace": "default", "name": "hostpid", "uid": ""}
    assert calls[-1]["caller"] == {"user": "nobody", "uid": "uid-nobody", "groups": ["system:authenticated"],
                                   "via": "token"}
    # Every refusal of this module is in the audit log, and every line is one JSON object.
    assert {e["code"] for e in calls if e["decision"] != "allow"} >= {"UNAUTHENTICATED", "PERMISSION_DENIED"}
    # No token anywhere: audit log, agent log (at debug level), kubeconfig-free outputs.
    everything = env.audit.read_text() + env.log.read_text()
    assert '"level": "debug"' in env.log.read_text() or "debug" in env.log.read_text()
    for token in (*TOKENS.values(), "agent-token", "bob-token"):
        assert token not in everything, token
