"""deploy/: the manifest is valid Kubernetes, holds exactly the privileges and grants its comments
document, cannot drift from the agent's code, the CLI or the image, and its capability set is what
the real agent needs: the agent runs on the lab with exactly that set, and with each one taken away."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from nsinspect.agent.main import parse_args
from nsinspect.agent.server.app import bind_address
from nsinspect.cli import kube
from testbed import toolbox
from testbed.lab.config import LabConfig
from testbed.lab.pods import LabPod
from tests.conftest import require, require_root

if TYPE_CHECKING:
    from testbed.cluster.standin import Cluster

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MANIFEST = DEPLOY / "daemonset.yaml"
EXAMPLES = DEPLOY / "bindings.example.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
NAMESPACE = "nsinspect-system"
VENV = "/opt/nsinspect/venv"  # the image's virtualenv
# The oldest release with securityContext.appArmorProfile, and the three newest the schemas cover.
K8S_VERSIONS = ("1.30.0", "1.35.0", "1.36.0", "1.37.0")

# What the agent itself needs (test_each_capability_is_needed proves each), with a command that fails without it.
OWN_CAPS = {
    "SYS_ADMIN": "net plain",  # setns into the pod's network namespace
    "SYS_PTRACE": "ps nonroot",  # /proc/PID of another user's processes
    "SYS_CHROOT": "exec plain -- true",  # setns into a mount namespace
    "DAC_OVERRIDE": "exec nonroot -- true",  # /proc/PID/environ of a non-root container
    "SETUID": "exec nonroot -- true",
    "SETGID": "exec nonroot -- true",
    "SETPCAP": "exec nonroot -- true",
    "KILL": "exec nonroot -- true",
}
# The runtimes' default set, handed on to commands run as root in an ordinary container.
HANDED_ON = ("CHOWN", "FOWNER", "FSETID", "MKNOD", "NET_BIND_SERVICE", "NET_RAW", "AUDIT_WRITE", "SETFCAP")
CAPS = set(OWN_CAPS) | set(HANDED_ON)
CAP_BITS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
            "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_ADMIN": 12, "NET_RAW": 13, "SYS_CHROOT": 18,
            "SYS_PTRACE": 19, "SYS_ADMIN": 21, "MKNOD": 27, "AUDIT_WRITE": 29, "SETFCAP": 31}

# (apiGroup, resource, verb) each role grants, as its comments document.
RBAC: dict[tuple[str, str], set[tuple[str, str, str]]] = {
    ("ClusterRole", "nsinspect-agent"): {
        ("authentication.k8s.io", "tokenreviews", "create"), ("authorization.k8s.io", "subjectaccessreviews", "create"),
        ("", "pods", "get"), ("", "pods", "list"), ("", "pods", "watch")},
    ("Role", "nsinspect-agent-access"): {
        ("", "pods", "get"), ("", "pods", "list"), ("", "pods/portforward", "get"), ("", "pods/portforward", "create")},
    ("ClusterRole", "nsinspect-reader"): {("", "pods", "get"), ("", "pods", "list"), ("", "pods", "watch")},
    ("ClusterRole", "nsinspect-debugger"): {
        ("", "pods", "get"), ("", "pods", "list"), ("", "pods", "watch"), ("", "pods/exec", "create"),
        ("", "pods/ephemeralcontainers", "get"), ("", "pods/ephemeralcontainers", "patch")},
    ("ClusterRole", "nsinspect-nsenter"): {("", "pods/nsenter", "create")},
    ("ClusterRole", "nsinspect-node-viewer"): {("", "nodes", "list"), ("", "nodes/nsmap", "get")},
}

Doc = dict[str, Any]


def load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} documents"
    return found[0]


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) anywhere in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return load(MANIFEST)


@pytest.fixture(scope="module")
def pod(docs: list[Doc]) -> Doc:
    return dict(find(docs, "DaemonSet", "nsinspect-agent")["spec"]["template"]["spec"])


@pytest.fixture(scope="module")
def agent(pod: Doc) -> Doc:
    (container,) = pod["containers"]
    return dict(container)


# -- valid Kubernetes ---------------------------------------------------------------------------------
def validator() -> Any:
    require(importlib.util.find_spec("kubernetes_validate") is not None,
            "kubernetes-validate is not installed (pip install kubernetes-validate)")
    return importlib.import_module("kubernetes_validate")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", [MANIFEST, EXAMPLES], ids=lambda p: p.name)
def test_every_document_matches_the_official_schema(path: Path, version: str) -> None:
    kv = validator()
    for doc in load(path):
        # strict: an unknown (misspelt) field is an error; the answer is the schema release used.
        assert kv.validate(doc, version, strict=True) == version.rsplit(".", 1)[0]


def test_the_schema_check_is_strict(docs: list[Doc]) -> None:
    """The check above would pass a typo if it were lax; and appArmorProfile really needs 1.30."""
    kv = validator()
    ds = copy.deepcopy(find(docs, "DaemonSet", "nsinspect-agent"))
    ds["spec"]["template"]["spec"]["hostPIDs"] = True
    with pytest.raises(kv.ValidationError, match="hostPIDs"):
        kv.validate(ds, K8S_VERSIONS[-1], strict=True)
    with pytest.raises(kv.ValidationError, match="appArmorProfile"):
        kv.validate(find(docs, "DaemonSet", "nsinspect-agent"), "1.29.0", strict=True)


def test_references_resolve(docs: list[Doc], pod: Doc, agent: Doc) -> None:
    """What the API server checks beyond the schema, for this manifest."""
    ds = find(docs, "DaemonSet", "nsinspect-agent")
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert {m["name"] for m in agent["volumeMounts"]} == {v["name"] for v in pod["volumes"]}
    find(docs, "ServiceAccount", pod["serviceAccountName"])
    for doc in docs:
        assert doc["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding") or \
            doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
    binding = find(docs, "ClusterRoleBinding", "nsinspect-agent")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "nsinspect-agent"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "nsinspect-agent", "namespace": NAMESPACE}]


# -- what the CLI and the agent expect ----------------------------------------------------------------
def test_the_cli_finds_the_agent(docs: list[Doc], agent: Doc) -> None:
    ds = find(docs, "DaemonSet", "nsinspect-agent")
    assert ds["metadata"]["namespace"] == kube.AGENT_NAMESPACE
    key, _, value = kube.AGENT_SELECTOR.partition("=")
    assert ds["spec"]["template"]["metadata"]["labels"][key] == value
    assert agent["ports"] == [{"name": "grpc", "containerPort": kube.AGENT_PORT, "protocol": "TCP"}]


def test_the_agent_accepts_its_arguments(agent: Doc, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real parser, so a renamed or removed flag fails here and not in a cluster."""
    monkeypatch.setenv("NODE_NAME", "node-7")
    args = parse_args(agent["args"])
    assert args.listen == ["tcp://127.0.0.1:7443"]
    assert args.node_name == "node-7"  # from the downward API's NODE_NAME
    assert args.runtime_state_dir == [Path("/run/containerd"), Path("/run/containers/storage")]
    assert args.toolbox == "/opt/nsinspect/toolbox"
    assert (args.audit_log, args.log_format, args.max_sessions, args.idle_timeout) == ("-", "json", 8, 1800)
    assert args.metrics_listen == "127.0.0.1:9464"  # loopback: the parser refuses anything else
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in agent["env"]


def test_the_agent_listens_on_loopback_only(agent: Doc) -> None:
    listens = parse_args(agent["args"]).listen
    assert listens and all(re.fullmatch(r"tcp://127\.0\.0\.1:\d+", a) for a in listens)
    for address in listens:
        assert bind_address(address) == address.removeprefix("tcp://")  # the agent's own check accepts it
    with pytest.raises(ValueError, match="loopback"):
        bind_address("tcp://0.0.0.0:7443")


# -- privileges --------------------------------------------------------------------------------------
def test_namespace_admits_privileged_pods(docs: list[Doc]) -> None:
    labels = find(docs, "Namespace", NAMESPACE)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "privileged"


def test_pod_privileges(docs: list[Doc], pod: Doc) -> None:
    assert pod["hostPID"] is True
    assert pod.get("hostNetwork", False) is False and pod.get("hostIPC", False) is False
    assert pod.get("hostUsers", True) is True
    assert not [key for doc in docs for key, _ in walk(doc) if key == "hostPort"]
    assert [c["name"] for c in pod["containers"]] == ["agent"] and not pod.get("initContainers")
    assert pod["tolerations"] == [{"operator": "Exists"}]  # every taint, every effect
    assert pod["priorityClassName"] == "system-node-critical"
    strategy = find(docs, "DaemonSet", "nsinspect-agent")["spec"]["updateStrategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%", "maxSurge": 0}}


def test_container_privileges(agent: Doc) -> None:
    sc = agent["securityContext"]
    assert (sc["privileged"], sc["readOnlyRootFilesystem"], sc["runAsUser"]) == (False, True, 0)
    assert sc["allowPrivilegeEscalation"] is True  # the API server refuses false with SYS_ADMIN
    assert sc["capabilities"]["drop"] == ["ALL"]
    added = sc["capabilities"]["add"]
    assert len(added) == len(set(added)) and set(added) == CAPS
    assert (sc["seccompProfile"], sc["appArmorProfile"]) == ({"type": "Unconfined"}, {"type": "Unconfined"})
    assert sc["seLinuxOptions"]["type"] == "spc_t"
    resources = agent["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_host_paths_are_read_only(pod: Doc, agent: Doc) -> None:
    hosts = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert sorted(hosts.values()) == ["/run/containerd", "/run/containers/storage", "/run/crio", "/sys/fs/cgroup"]
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    for name, path in hosts.items():
        assert mounts[name]["readOnly"] is True, name
        # A plain read-only bind leaves the mounts below it (containers' root filesystems) writable.
        assert mounts[name]["recursiveReadOnly"] == "IfPossible", name
        assert mounts[name].get("mountPropagation", "None") == "None", name  # what recursiveReadOnly requires
        assert mounts[name]["mountPath"] == path  # where the agent looks by default
    writable = [m["mountPath"] for m in agent["volumeMounts"] if not m.get("readOnly")]
    assert writable == ["/tmp"] and "emptyDir" in next(v for v in pod["volumes"] if v["name"] == "tmp")


def test_probes_ask_the_loopback_listener(agent: Doc) -> None:
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(agent[probe]) & {"exec", "grpc", "tcpSocket", "httpGet"} == {"exec"}, probe  # no pod-IP probes
        command = agent[probe]["exec"]["command"]
        assert command[0] == f"{VENV}/bin/python" and "127.0.0.1:7443" in command[-1]


# -- RBAC --------------------------------------------------------------------------------------------
def grants(role: Doc) -> set[tuple[str, str, str]]:
    found = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}  # no resourceNames, no nonResourceURLs
        found |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return found


def test_roles_grant_exactly_the_documented_verbs(docs: list[Doc]) -> None:
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("Role", "ClusterRole")}
    assert set(roles) == set(RBAC)
    for key, expected in RBAC.items():
        assert grants(roles[key]) == expected, key
        assert "*" not in {part for grant in grants(roles[key]) for part in grant}
    assert roles["Role", "nsinspect-agent-access"]["metadata"]["namespace"] == NAMESPACE
    # Port-forward only in the agents' namespace: a ClusterRole could be bound cluster-wide.
    assert not [k for k, grant in RBAC.items() if k[0] == "ClusterRole" and ("", "pods/portforward", "get") in grant]
    # The manifest itself grants users nothing.
    assert [d["metadata"]["name"] for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")] == \
        ["nsinspect-agent"]


def test_the_agent_checks_what_the_roles_grant(docs: list[Doc]) -> None:
    """Every permission agent/server/auth/policy.py's POLICY asks for is granted by a user role, and by the role
    whose comment names that check; none of them is a real kubelet or API permission it could open."""
    from nsinspect.agent.server.auth.policy import POLICY  # noqa: PLC0415

    asked = {p for rule in POLICY.values() for p in (*rule.needs, *rule.elevated)}
    granted = {g for key, grants_ in RBAC.items() if key[1] != "nsinspect-agent" for g in grants_}
    for permission in asked:
        resource = f"{permission.resource}/{permission.subresource}" if permission.subresource else permission.resource
        assert ("", resource, permission.verb) in granted, permission
    assert {str(p) for p in asked} == {"get pods", "create pods/exec", "create pods/nsenter", "get nodes/nsmap"}
    assert ("", "nodes/proxy", "get") not in granted
    text = MANIFEST.read_text()
    for check in ("create pods/exec: the agent's check for Exec", "create pods/nsenter: the agent's check",
                  "get nodes/nsmap: the agent's check for NodeMap"):
        assert check in text


def test_example_bindings_scope_roles_as_documented(docs: list[Doc]) -> None:
    kinds = {d["metadata"]["name"]: d["kind"] for d in docs if d["kind"] in ("Role", "ClusterRole")}
    for binding in load(EXAMPLES):
        ref = binding["roleRef"]
        assert kinds[ref["name"]] == ref["kind"], ref
        if ref["kind"] == "Role":
            assert binding["metadata"]["namespace"] == NAMESPACE
        if ref["name"] in ("nsinspect-node-viewer", "nsinspect-agent"):
            assert binding["kind"] == "ClusterRoleBinding"
        if ref["name"] == "nsinspect-agent-access":
            assert binding["kind"] == "RoleBinding"


# -- the image ---------------------------------------------------------------------------------------
def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def test_image_matches_the_manifest(agent: Doc) -> None:
    steps = instructions()
    args = dict(step[1].split("=", 1) for step in steps if step[0] == "ARG")
    assert args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    assert [a for i, a in steps if i == "FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    assert [a for i, a in steps if i == "ENTRYPOINT"] == [f'["{VENV}/bin/nsinspect-agent"]']
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'nsinspect-agent = "nsinspect.agent.main:main"' in pyproject
    assert [a for i, a in steps if i == "EXPOSE"] == [str(agent["ports"][0]["containerPort"])]
    runs = " ".join(a for i, a in steps if i == "RUN")
    assert f"python -m venv {VENV}" in runs and "busybox-static" in runs
    toolbox_dir = parse_args(agent["args"]).toolbox
    assert f"{toolbox_dir}/bin/busybox" in runs
    version = re.search(r'^version = "(.+)"', pyproject, re.M)
    assert version and agent["image"] == f"nsinspect-agent:{version[1]}"


def test_image_copies_what_pip_install_needs() -> None:
    """Every COPY source exists and passes the build's .dockerignore; together they are the package."""
    ignore = [line for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = set()
    for instruction, arguments in instructions():
        if instruction == "COPY" and "--from=" not in arguments:
            sources |= {s.rstrip("/") for s in shlex.split(arguments)[:-1]}
    assert sources == allowed
    for source in sources:
        assert (ROOT / source).exists(), source
    pyproject = (ROOT / "pyproject.toml").read_text()
    package_dirs = set(re.findall(r'^"nsinspect\.\w+" = "(\w+)"', pyproject, re.M))
    assert package_dirs and package_dirs | {"pyproject.toml", "README.md"} == sources


def test_image_toolbox_recipe_builds_a_toolbox(tmp_path: Path) -> None:
    """The Dockerfile's own shell lines, run here with the toolbox under tmp_path."""
    require(Path("/bin/busybox").is_file(), "busybox-static is not installed (/bin/busybox)")
    recipe = next(a for i, a in instructions() if i == "RUN" and "/opt/nsinspect/toolbox" in a)
    dest = tmp_path / "toolbox"
    subprocess.run(["sh", "-ec", recipe.replace("/opt/nsinspect/toolbox", str(dest))], check=True)
    assert (dest / "bin" / "busybox").is_file() and os.readlink(dest / "bin" / "sh") == "busybox"
    out = subprocess.run([dest / "bin" / "sh", "-c", "echo $0; ls /"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith(f"{dest}/bin/sh\n")
    assert sorted(p.name for p in dest.iterdir()) == ["bin"]  # what tools mode mounts: bin/ only


# -- the capability set, on the real agent ------------------------------------------------------------
class CappedAgent:
    """The real agent with the manifest's arguments (paths pointed at the lab), under setpriv with
    exactly `caps` as its bounding set, as the container runtime starts it. It checks callers with
    the stand-in API server (`--kubeconfig`, where a pod has its service account); the CLI talks to
    it over TCP with the admin's token, as through port-forward."""

    def __init__(self, cfg: LabConfig, agent: Doc, caps: set[str], tools: Path, log: Path,
                 api: Cluster) -> None:
        from testbed.agentproc import free_port  # noqa: PLC0415 - grpc only where an agent runs

        self.port = free_port()
        args = []
        for arg in agent["args"]:
            flag, _, value = arg.partition("=")
            value = {"--listen": f"tcp://127.0.0.1:{self.port}", "--runtime-state-dir": str(cfg.state),
                     "--toolbox": str(tools), "--metrics-listen": "127.0.0.1:0"}.get(flag, value)
            if f"{flag}={value}" not in args:
                args.append(f"{flag}={value}")
        bounding = ",".join(["-all", *(f"+{c.lower()}" for c in sorted(caps))])
        self.argv = ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--",
                     sys.executable, "-m", "nsinspect.agent.main", f"--cri-endpoint={cfg.endpoint}", *args,
                     f"--kubeconfig={api.kubeconfig(log.parent / 'agent.kubeconfig', 'agent-token')}"]
        self.log = log
        self.env = {**os.environ, "NODE_NAME": "lab-node", "NSINSPECT_AGENT": f"127.0.0.1:{self.port}",
                    "NSINSPECT_TOKEN": "admin-token"}

    def __enter__(self) -> CappedAgent:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=out)
        try:
            from testbed.agentproc import wait_healthy  # noqa: PLC0415 - grpc only where an agent runs

            wait_healthy(f"127.0.0.1:{self.port}", self.proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cli(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nsinspect.cli.main", *shlex.split(command)],
                              capture_output=True, text=True, env=self.env, timeout=60)

    def probe(self, agent: Doc) -> int:
        """The manifest's own health probe command, against this agent."""
        command = list(agent["readinessProbe"]["exec"]["command"])
        command[0] = sys.executable
        command[-1] = command[-1].replace("127.0.0.1:7443", f"127.0.0.1:{self.port}")
        return subprocess.run(command, capture_output=True, timeout=30).returncode


@pytest.fixture(scope="module")
def lab_toolbox(lab_cfg: LabConfig) -> Path:
    return toolbox.build(toolbox.default_dir(lab_cfg))


@pytest.fixture(scope="module")
def standin() -> Iterator[Cluster]:
    from testbed.cluster.standin import Cluster  # noqa: PLC0415

    with Cluster() as api:
        yield api


def capped(lab_cfg: LabConfig, agent: Doc, caps: set[str], tools: Path, tmp: Path, api: Cluster) -> CappedAgent:
    require_root()
    require(shutil.which("setpriv") is not None, "setpriv (util-linux) is not installed")
    return CappedAgent(lab_cfg, agent, caps, tools, tmp / "agent.log", api)


@pytest.mark.lab
def test_the_capability_set_is_enough(lab_cfg: LabConfig, canonical: dict[str, LabPod], agent: Doc,
                                      lab_toolbox: Path, tmp_path: Path, standin: Cluster) -> None:
    """Every feature works with exactly the manifest's capabilities (and arguments), read-only aside."""
    with capped(lab_cfg, agent, CAPS, lab_toolbox, tmp_path, standin) as a:
        results = {c: a.cli(c) for c in (
            "ns plain", "ps nonroot", "net plain", "nsmap -t net", "exec plain -- id", "exec nonroot -- id",
            "exec plain --tools -- ls /target", "exec plain --privileged -- grep CapEff /proc/self/status")}
        for command, result in results.items():
            assert result.returncode == 0, f"{command}: {result.stderr}"
        assert "Verification: ok" in results["ns plain"].stdout
        assert "eth0" in results["net plain"].stdout
        assert results["exec plain -- id"].stdout.startswith("uid=0(")
        assert results["exec nonroot -- id"].stdout.startswith("uid=1000(")
        assert "bin" in results["exec plain --tools -- ls /target"].stdout.split()
        # --privileged gets the agent's set: exactly the manifest's, as the kernel reports it.
        effective = int(results["exec plain --privileged -- grep CapEff /proc/self/status"].stdout.split()[1], 16)
        assert effective == sum(1 << CAP_BITS[c] for c in CAPS)
        assert a.probe(agent) == 0
    assert a.probe(agent) != 0  # the probe fails once nothing answers


@pytest.mark.lab
@pytest.mark.parametrize("cap", sorted(CAPS))
def test_each_capability_is_needed(lab_cfg: LabConfig, canonical: dict[str, LabPod], agent: Doc,
                                   lab_toolbox: Path, tmp_path: Path, cap: str, standin: Cluster) -> None:
    """Without any one of them, a feature fails: the set is not larger than it must be."""
    command = OWN_CAPS.get(cap, "exec plain -- true")  # the runtime's default set: capset refuses the rest
    with capped(lab_cfg, agent, CAPS - {cap}, lab_toolbox, tmp_path, standin) as a:
        result = a.cli(command)
        assert result.returncode != 0, f"{command} worked without {cap}"
        assert "UNAUTHENTICATED" not in result.stderr and "cannot verify" not in result.stderr  # the kernel said no
        assert a.probe(agent) == 0  # the agent itself still serves
