"""The CLI through Kubernetes, end to end: the stand-in API server, its kubelet on the lab, a real
agent reached only through pods/portforward, and the three use cases' commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from testbed import toolbox
from testbed.agentproc import free_port, running_agent
from testbed.cluster.auth import USER_AUDIENCES, Token, User, rule
from testbed.cluster.fixtures import client_for
from testbed.cluster.kubelet import KubeletOptions
from testbed.cluster.registry import UNMANAGED
from testbed.cluster.standin import TWO_NODES, Cluster
from testbed.lab.config import LabConfig

pytestmark = pytest.mark.lab


@contextmanager
def cluster_with_agent(lab_cfg: LabConfig, tmp_path: Path, options: KubeletOptions | None = None) -> Iterator[Cluster]:
    """The stand-in, and the real agent for the lab registered as the DaemonSet's pod on lab-node
    (it listens on loopback only; the CLI reaches it through pods/portforward and sends the
    kubeconfig's token, which the agent verifies with the stand-in as its service account)."""
    port = free_port()
    tools = toolbox.build(tmp_path / "toolbox")
    with Cluster(lab_cfg, kubelet_options=options or KubeletOptions()) as cluster, \
            running_agent(lab_cfg, tmp_path / "agent.sock", "--listen", f"tcp://127.0.0.1:{port}",
                          "--toolbox", str(tools),
                          kubeconfig=cluster.kubeconfig(tmp_path / "agent.kubeconfig", "agent-token")):
        cluster.register_agent("lab-node", "127.0.0.1", port)
        yield cluster


@pytest.fixture
def agent_in_cluster(lab_cfg: LabConfig, tmp_path: Path) -> Iterator[Cluster]:
    with cluster_with_agent(lab_cfg, tmp_path) as cluster:
        yield cluster


@pytest.fixture
def kubeconfig(agent_in_cluster: Cluster, tmp_path: Path) -> Path:
    return agent_in_cluster.kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def k8s(agent_in_cluster: Cluster, tmp_path: Path) -> Iterator[Any]:
    client = client_for(agent_in_cluster, "admin-token", tmp_path / "admin.kubeconfig")
    yield client
    client.close()


def make_pod(core: Any, name: str, spec: dict[str, Any], namespace: str = "default") -> None:
    core.create_namespaced_pod(namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                                           "spec": spec})
    make_pod_wait(core, name, namespace)


def make_pod_wait(core: Any, name: str, namespace: str = "default") -> None:
    deadline = time.monotonic() + 30
    while core.read_namespaced_pod(name, namespace).status.phase != "Running":
        assert time.monotonic() < deadline, f"pod {name} did not start"
        time.sleep(0.1)


def sleeper(name: str = "app") -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sleep", "3600"]}


def nsinspect(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, with the kubeconfig in $KUBECONFIG as kubectl users have it."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("NSINSPECT_AGENT", None)
    return subprocess.run([sys.executable, "-m", "nsinspect.cli.main", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env=env)


@pytest.fixture
def core(k8s: Any) -> Any:
    return client.CoreV1Api(k8s)


def test_ns_through_port_forward(agent_in_cluster: Cluster, core: Any, kubeconfig: Path) -> None:
    make_pod(core, "web", {"containers": [sleeper("app"), sleeper("sidecar")]})
    result = nsinspect(kubeconfig, "ns", "web", "-o", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pod"]["name"] == "web" and report["verdict"] == "VERDICT_OK"
    statuses = core.read_namespaced_pod("web", "default").status.container_statuses
    assert {c["name"]: c["id"] for c in report["pod"]["containers"]} == {
        s.name: s.container_id.removeprefix("containerd://") for s in statuses}


def test_debug_target_shares_pid_and_says_so(agent_in_cluster: Cluster, core: Any, kubeconfig: Path) -> None:
    make_pod(core, "web", {"containers": [sleeper("app")]})
    result = nsinspect(kubeconfig, "debug", "web", "--image", "busybox", "--target", "app", "--name", "dbg",
                       "--", "sleep", "3600")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pid: the namespace of 'app', as expected (targetContainerName)" in result.stdout
    [ec] = core.read_namespaced_pod("web", "default").spec.ephemeral_containers
    assert (ec.name, ec.target_container_name, ec.command) == ("dbg", "app", ["sleep", "3600"])
    assert ec.security_context.capabilities.add == ["SYS_PTRACE"]  # the general profile


def test_debug_catches_a_runtime_that_ignores_target(lab_cfg: LabConfig, tmp_path: Path) -> None:
    with cluster_with_agent(lab_cfg, tmp_path, KubeletOptions(ignore_target=True)) as old_runtime:
        kubeconfig = old_runtime.kubeconfig(tmp_path / "kubeconfig")
        api = client_for(old_runtime, "admin-token", tmp_path / "admin")
        make_pod(client.CoreV1Api(api), "web", {"containers": [sleeper("app")]})
        result = nsinspect(kubeconfig, "debug", "web", "--image", "busybox", "--target", "app", "--name", "dbg",
                           "--", "sleep", "3600")
        api.close()
    assert result.returncode == 3, result.stdout + result.stderr
    assert ("pid: expected the namespace of 'app' (targetContainerName); actually the pod sandbox's: "
            "this runtime ignores TARGET") in result.stdout


def test_verify_explains_an_ignored_target(agent_in_cluster: Cluster, core: Any, kubeconfig: Path) -> None:
    make_pod(core, "web", {"shareProcessNamespace": True, "containers": [sleeper("app")]})
    assert nsinspect(kubeconfig, "debug", "web", "--image", "busybox", "--target", "app", "--name", "dbg",
                     "--", "sleep", "3600").returncode == 0
    result = nsinspect(kubeconfig, "verify", "web")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pid: the pod sandbox's, as expected (shareProcessNamespace; targetContainerName 'app' is ignored)" \
        in result.stdout


@pytest.mark.parametrize(("setup", "expected"), [
    ("disabled", "ephemeral containers are disabled for this cluster"),
    ("podsecurity", 'rejected by Pod Security admission: pods "web" is forbidden: violates PodSecurity '
                    '"restricted:latest"'),
    ("rbac", 'forbidden: pods "web" is forbidden: User "alice" cannot patch resource "pods/ephemeralcontainers"'),
    ("invalid", "invalid: Pod \"web\" is invalid: spec.ephemeralContainers[0].name: Duplicate value"),
])
def test_refusals_are_named_in_one_line(agent_in_cluster: Cluster, core: Any, kubeconfig: Path, tmp_path: Path,
                                        setup: str, expected: str) -> None:
    make_pod(core, "web", {"containers": [sleeper("app")]})
    config = kubeconfig
    name = "app" if setup == "invalid" else "dbg"  # an ephemeral container may not reuse a container's name
    if setup == "disabled":
        agent_in_cluster.behaviours.ephemeral_containers = False
    elif setup == "podsecurity":
        agent_in_cluster.behaviours.pod_security["default"] = "restricted"
    elif setup == "rbac":
        config = agent_in_cluster.kubeconfig(tmp_path / "alice", "alice-token")
    before = core.read_namespaced_pod("web", "default").to_dict()["spec"]
    result = nsinspect(config, "debug", "web", "--image", "busybox", "--target", "app", "--name", name)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot add a debug container to default/web: ") and expected in line, line
    assert line.endswith("run with --fallback to debug through the nsinspect agent without changing the pod")
    assert core.read_namespaced_pod("web", "default").to_dict()["spec"] == before


def test_never_started_times_out_with_a_reason(lab_cfg: LabConfig, tmp_path: Path) -> None:
    with cluster_with_agent(lab_cfg, tmp_path, KubeletOptions(start_ephemeral=False)) as quiet:
        kubeconfig = quiet.kubeconfig(tmp_path / "kubeconfig")
        api = client_for(quiet, "admin-token", tmp_path / "admin")
        make_pod(client.CoreV1Api(api), "web", {"containers": [sleeper("app")]})
        result = nsinspect(kubeconfig, "debug", "web", "--image", "busybox", "--target", "app",
                           "--wait-timeout", "2")
        api.close()
    assert result.returncode == 1
    assert "no kubelet ever reported it" in result.stderr


def test_no_agent_on_the_node(lab_cfg: LabConfig, tmp_path: Path) -> None:
    with Cluster(lab_cfg) as agentless:
        api = client_for(agentless, "admin-token", tmp_path / "admin")
        make_pod(client.CoreV1Api(api), "web", {"containers": [sleeper("app")]})
        result = nsinspect(agentless.kubeconfig(tmp_path / "kubeconfig"), "ns", "web")
        api.close()
    assert result.returncode == 1
    assert 'no nsinspect agent on node "lab-node"' in result.stderr


def test_port_forward_forbidden(agent_in_cluster: Cluster, core: Any, tmp_path: Path) -> None:
    make_pod(core, "web", {"containers": [sleeper("app")]})
    alice = agent_in_cluster.kubeconfig(tmp_path / "alice", "alice-token")
    result = nsinspect(alice, "ns", "web")
    assert result.returncode == 1
    assert "port-forward to nsinspect-system/nsinspect-agent-" in result.stderr and "forbidden" in result.stderr


def test_unknown_pod(agent_in_cluster: Cluster, kubeconfig: Path) -> None:
    result = nsinspect(kubeconfig, "ns", "nope")
    assert result.returncode == 1 and result.stderr.strip() == 'error: pod "nope" not found in namespace "default"'


def test_fan_out_over_two_nodes_with_one_agent_down(lab_cfg: LabConfig, tmp_path: Path) -> None:
    port = free_port()
    with Cluster(lab_cfg, nodes=TWO_NODES) as two, \
            running_agent(lab_cfg, tmp_path / "agent.sock", "--listen", f"tcp://127.0.0.1:{port}",
                          kubeconfig=two.kubeconfig(tmp_path / "agent.kubeconfig", "agent-token")):
        two.register_agent("lab-node", "127.0.0.1", port)
        two.register_agent("lab-node-2", "127.0.0.1", free_port())  # registered, but nothing listens: down
        api = client_for(two, "admin-token", tmp_path / "admin")
        core = client.CoreV1Api(api)
        for name, node in (("fan-a", "lab-node"), ("fan-b", "lab-node-2"), ("fan-c", "lab-node")):
            body: Any = {"metadata": {"name": name, "labels": {"app": "fan"}},
                         "spec": {"nodeName": node, "containers": [sleeper()]}}
            core.create_namespaced_pod("default", body)
        for name in ("fan-a", "fan-b", "fan-c"):
            make_pod_wait(core, name)
        kubeconfig = two.kubeconfig(tmp_path / "kubeconfig")

        ps = nsinspect(kubeconfig, "ps", "-l", "app=fan", "-o", "json")
        items = {i["pod"]: i for i in json.loads(ps.stdout)["items"]}
        assert ps.returncode == 1  # one node failed, and says so ...
        assert "error" in items["default/fan-b"] and items["default/fan-b"]["node"] == "lab-node-2"
        assert "cannot reach the agent" in items["default/fan-b"]["error"] or "UNAVAILABLE" in \
            items["default/fan-b"]["error"]
        for name in ("default/fan-a", "default/fan-c"):  # ... without hiding the others
            assert items[name]["node"] == "lab-node"
            assert any(p["argv"] == ["sleep", "3600"] for p in items[name]["result"]["processes"])
        assert "error: node lab-node-2 pod default/fan-b:" in ps.stderr

        ns = nsinspect(kubeconfig, "ns", "-l", "app=fan")
        assert ns.returncode == 1
        assert ns.stdout.count("=== node lab-node  pod default/fan-") == 2 and "Verification: ok" in ns.stdout

        nodes = nsinspect(kubeconfig, "nsmap", "--all-nodes", "-t", "net", "-o", "json")
        assert nodes.returncode == 1
        by_node = {i["node"]: i for i in json.loads(nodes.stdout)["items"]}
        assert "result" in by_node["lab-node"] and "error" in by_node["lab-node-2"]
        api.close()


@pytest.mark.parametrize("refusal", ["disabled", "rbac", "podsecurity"])
def test_fallback_debugs_through_the_agent_and_changes_nothing(agent_in_cluster: Cluster, core: Any,
                                                               kubeconfig: Path, tmp_path: Path, refusal: str) -> None:
    """The cluster refuses the ephemeral container; --fallback runs the debugger's tools in the target's
    namespaces through the agent, and the pod's spec stays byte-identical."""
    make_pod(core, "web", {"containers": [sleeper("app")]})
    config = kubeconfig
    if refusal == "disabled":
        agent_in_cluster.behaviours.ephemeral_containers = False
    elif refusal == "podsecurity":
        agent_in_cluster.behaviours.pod_security["default"] = "restricted"
    else:  # may look, port-forward and exec through the agent, may not add ephemeral containers
        agent_in_cluster.authority.add_token(Token("carol-token", User("carol", groups=("support",)),
                                                   USER_AUDIENCES))
        agent_in_cluster.authority.grant("user:carol", rule("get list watch", "pods"),
                                         rule("create", "pods/portforward pods/exec pods/nsenter"))
        config = agent_in_cluster.kubeconfig(tmp_path / "carol", "carol-token")
    before = json.dumps(core.read_namespaced_pod("web", "default").to_dict()["spec"], sort_keys=True, default=str)
    result = nsinspect(config, "debug", "web", "--image", "busybox", "--target", "app", "--fallback",
                       "--", "sh", "-c", "hostname; ps -o pid,args | grep -c 'sleep 3600'; ls /target/bin/sh")
    assert result.returncode == 0, result.stdout + result.stderr
    hostname, sleepers, target_sh = result.stdout.split()
    assert hostname == "web" and int(sleepers) >= 1 and target_sh == "/target/bin/sh"
    assert "warning: cannot add a debug container to default/web" in result.stderr
    after = json.dumps(core.read_namespaced_pod("web", "default").to_dict()["spec"], sort_keys=True, default=str)
    assert after == before


def _bash_complete(line: list[str], kubeconfig: Path | None = None) -> list[str]:
    """COMPREPLY of the real bash completion script for the words of `line` (the last being typed)."""
    script = subprocess.run([sys.executable, "-m", "nsinspect.cli.main", "completion", "bash"], capture_output=True,
                            text=True, check=True).stdout
    nsinspect_bin = str(Path(sys.executable).parent / "nsinspect")
    words = " ".join(f"'{w}'" for w in [nsinspect_bin, *line])
    program = (f"{script}\nCOMP_WORDS=({words}); COMP_CWORD={len(line)}; _nsinspect; "
               "printf '%s\\n' \"${COMPREPLY[@]}\"")
    env = {**os.environ, **({"KUBECONFIG": str(kubeconfig)} if kubeconfig else {})}
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env, check=True).stdout
    return sorted(w for w in out.splitlines() if w)


def test_bash_completion(agent_in_cluster: Cluster, core: Any, kubeconfig: Path) -> None:
    assert _bash_complete(["n"]) == ["net", "ns", "nsmap"]
    assert "--namespace" in _bash_complete(["ps", "--n"]) and "--tree" in _bash_complete(["ps", "--t"])
    make_pod(core, "web", {"containers": [sleeper("app")]})
    make_pod(core, "worker", {"containers": [sleeper("app")]})
    assert _bash_complete(["ns", "w"], kubeconfig) == ["web", "worker"]
    assert _bash_complete(["exec", "-n", "default", "we"], kubeconfig) == ["web"]
    assert _bash_complete(["ns", "-n", "nsinspect-system", "ns"], kubeconfig)[0].startswith("nsinspect-agent-")


def test_debug_interactive_session_in_the_debugger(agent_in_cluster: Cluster, core: Any, kubeconfig: Path) -> None:
    make_pod(core, "web", {"containers": [sleeper("app")]})
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("NSINSPECT_AGENT", None)
    result = subprocess.run([sys.executable, "-m", "nsinspect.cli.main", "debug", "web", "--image", "busybox",
                             "--target", "app", "--name", "dbg", "-i"],
                            input="echo from-the-debugger; hostname; ps -o args | grep -c 'sleep 3600'\n",
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pid: the namespace of 'app', as expected" in result.stdout  # verified first ...
    tail = result.stdout.strip().splitlines()[-3:]
    assert tail[:2] == ["from-the-debugger", "web"] and int(tail[2]) >= 1  # ... then a shell that sees app


def test_fallback_is_offered_on_a_terminal(agent_in_cluster: Cluster, core: Any, kubeconfig: Path) -> None:
    import pty  # noqa: PLC0415

    make_pod(core, "web", {"containers": [sleeper("app")]})
    agent_in_cluster.behaviours.ephemeral_containers = False
    argv = [sys.executable, "-m", "nsinspect.cli.main", "debug", "web", "--image", "busybox", "--target", "app",
            "--", "hostname"]
    pid, fd = pty.fork()
    if pid == 0:  # the CLI on a terminal, as a person runs it
        os.environ["KUBECONFIG"] = str(kubeconfig)
        os.environ.pop("NSINSPECT_AGENT", None)
        os.execv(sys.executable, argv)
    seen = b""
    deadline = time.monotonic() + 60
    answered = False
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        if not answered and b"[y/N]" in seen:
            os.write(fd, b"y\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = seen.decode(errors="replace")
    assert answered, text
    assert "ephemeral containers are disabled for this cluster" in text
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "\nweb\r\n" in text or text.rstrip().endswith("web")


def test_agent_not_ready(agent_in_cluster: Cluster, core: Any, kubeconfig: Path, tmp_path: Path) -> None:
    with Cluster(agent_in_cluster.lab_cfg) as other:
        make_pod(client.CoreV1Api(client_for(other, "admin-token", tmp_path / "a")), "web",
                 {"containers": [sleeper("app")]})
        other.registry.create("nsinspect-system", {
            "metadata": {"name": "nsinspect-agent-starting", "labels": {"app.kubernetes.io/name": "nsinspect-agent"},
                         "annotations": {UNMANAGED: "true"}},
            "spec": {"nodeName": "lab-node", "containers": [{"name": "agent", "image": "nsinspect.local/agent:dev"}]}})
        result = nsinspect(other.kubeconfig(tmp_path / "kc"), "ns", "web")
    assert result.returncode == 1
    assert ('the nsinspect agent on node "lab-node" (nsinspect-system/nsinspect-agent-starting) is not ready '
            "(phase Pending)") in result.stderr


def test_waiting_reasons_are_shown(agent_in_cluster: Cluster, core: Any, kubeconfig: Path) -> None:
    make_pod(core, "web", {"containers": [sleeper("app")]})
    result = nsinspect(kubeconfig, "debug", "web", "--image", "nsinspect.local/no-such-image:1", "--target", "app",
                       "--name", "dbg", "--wait-timeout", "4")
    assert result.returncode == 1
    assert "  dbg: ErrImagePull" in result.stderr
    assert "timed out after 4s waiting for ephemeral container dbg to run (last: ErrImagePull" in result.stderr


def test_ps_and_net_by_pod_name(agent_in_cluster: Cluster, core: Any, kubeconfig: Path) -> None:
    make_pod(core, "web", {"containers": [sleeper("app"), {"name": "server", "image": "busybox",
                                                          "command": ["httpd", "-f", "-p", "8080"]}]})
    ps = nsinspect(kubeconfig, "ps", "web", "-o", "json")
    assert ps.returncode == 0, ps.stderr
    by_container = {p["container"]: p["argv"] for p in json.loads(ps.stdout)["processes"] if not p["sandbox"]}
    assert by_container == {"app": ["sleep", "3600"], "server": ["httpd", "-f", "-p", "8080"]}
    deadline = time.monotonic() + 10
    while True:
        net = nsinspect(kubeconfig, "net", "web", "-o", "json")
        assert net.returncode == 0, net.stderr
        listening = [s for s in json.loads(net.stdout)["sockets"] if s["local_port"] == 8080]
        if listening or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert listening and {o["container"] for o in listening[0]["owners"]} == {"server"}
    pod_ip = core.read_namespaced_pod("web", "default").status.pod_ip
    assert pod_ip in {a["address"] for a in json.loads(net.stdout)["addresses"]}
