"""NetInfo against real pod network namespaces: links, addresses and routes cross-checked with
iproute2's `ip -j`, sockets and their owners with `ss -p`, listeners started inside containers and
from outside (nsenter), host-network pods, no leaks, and the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import psutil
import pytest

from nsinspect.agent.core.model import PodRef
from nsinspect.agent.core.network import NetInfo, Socket
from nsinspect.agent.observe.network import NetInspector
from nsinspect.proto import agent_pb2, observe_pb2
from nsinspect.proto import observe_pb2_grpc as pb_grpc
from nsinspect.proto.rpcerror import rpc_status
from testbed.agentproc import running_agent
from testbed.lab.config import LabConfig
from testbed.lab.pods import ContainerSpec, Lab, LabPod, PodSpec
from tests.podprocs import QUIET, by_argv, host_process, lister_for, listing, until

pytestmark = pytest.mark.lab

# A host process that joins only the pod's network namespace and listens there (UDP, and TCP on ::1).
OUTSIDER = """
import socket, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 18082))
t = socket.socket(socket.AF_INET6); t.bind(("::1", 18083)); t.listen()
time.sleep(600)
"""


@pytest.fixture(scope="module")
def net(lab_cfg: LabConfig) -> Iterator[NetInspector]:
    with lister_for(lab_cfg) as lister:
        yield NetInspector(lister)


def _in_netns(pid: int, *argv: str) -> str:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", *argv], check=True, capture_output=True,
                          text=True).stdout


def _ip(pid: int, *what: str) -> list[dict[str, Any]]:
    return list(json.loads(_in_netns(pid, "ip", "-j", *what)))


def test_links_addresses_and_routes_match_iproute2(net: NetInspector, canonical: dict[str, LabPod]) -> None:
    pid = canonical["plain"].sandbox_pid
    info = net.net_info(PodRef("default", "plain"))
    assert not info.host_network and info.namespace is not None
    assert info.namespace.ino == os.stat(f"/proc/{pid}/ns/net").st_ino
    assert {(x.name, x.mtu, x.mac, x.state) for x in info.links} == {
        (x["ifname"], x["mtu"], x["address"], x["operstate"]) for x in _ip(pid, "link")}
    assert {(a.link, a.address, a.prefix_len, a.scope) for a in info.addresses} == {
        (x["ifname"], a["local"], a["prefixlen"], a["scope"]) for x in _ip(pid, "addr") for a in x["addr_info"]}
    [pod_ip] = [a.address for a in info.addresses if a.link == "eth0" and a.family == 4]
    assert pod_ip.startswith("127.100.")
    theirs = {(r["dst"], r.get("dev", ""), r.get("prefsrc", "")) for family in ("-4", "-6")
              for r in _ip(pid, family, "route", "show", "table", "all") if r.get("table") != "local"}
    ours = {(r.destination, r.link, r.source) for r in info.routes}
    assert ours == theirs


def test_host_network_is_said_plainly(net: NetInspector, canonical: dict[str, LabPod]) -> None:
    info = net.net_info(PodRef("default", "hostnet"))
    assert info.host_network and not (info.links or info.addresses or info.routes or info.sockets)


def _ss(pid: int) -> set[tuple[str, str, int, int, frozenset[int]]]:
    """(proto, state, local port, peer port, owner PIDs) as `ss -p` sees them in the pod's namespace."""
    states = {"LISTEN": "LISTEN", "ESTAB": "ESTABLISHED", "UNCONN": "UNCONN"}
    found = set()
    for line in _in_netns(pid, "ss", "-Htuanp").splitlines():
        fields = line.split()
        if fields[1] in states:
            found.add((fields[0], states[fields[1]], int(fields[4].rsplit(":", 1)[1]),
                       int(fields[5].rsplit(":", 1)[1].replace("*", "0")),
                       frozenset(int(p) for p in re.findall(r"pid=(\d+)", line))))
    return found


def _ours(info: NetInfo) -> set[tuple[str, str, int, int, frozenset[int]]]:
    return {(s.protocol, s.state, s.local_port, s.remote_port, frozenset(o.member.pid for o in s.owners))
            for s in info.sockets}


def _one(info: NetInfo, **match: object) -> Socket:
    [found] = [s for s in info.sockets if all(getattr(s, k) == v for k, v in match.items())]
    return found


@pytest.fixture(scope="module")
def busy_pod(lab: Lab, net: NetInspector) -> Iterator[tuple[LabPod, str]]:
    """A pod with listeners in app (loopback and pod address), a client in sidecar, and an outsider."""
    with lab.pod(PodSpec("net-owners", (ContainerSpec("app"), ContainerSpec("sidecar")))) as pod:
        info = net.net_info(PodRef("default", "net-owners"))
        [pod_ip] = [a.address for a in info.addresses if a.link == "eth0" and a.family == 4]
        lab.exec(pod["app"].id, "sh", "-c", f"httpd -f -p 127.0.0.1:18080 -h /tmp {QUIET} & "
                                            f"httpd -f -p {pod_ip}:18081 -h /tmp {QUIET} &")
        until("the listeners", lambda: len(net.net_info(PodRef("default", "net-owners")).sockets) >= 2)
        lab.exec(pod["sidecar"].id, "sh", "-c", f"(sleep 600 | nc 127.0.0.1 18080) {QUIET} &")
        with host_process("nsenter", "-t", str(pod.sandbox_pid), "-n", sys.executable, "-c", OUTSIDER):
            until("every socket", lambda: len(net.net_info(PodRef("default", "net-owners")).sockets) == 6)
            yield pod, pod_ip


def test_sockets_and_owners(net: NetInspector, busy_pod: tuple[LabPod, str], lab_cfg: LabConfig) -> None:
    pod, pod_ip = busy_pod
    info = net.net_info(PodRef("default", "net-owners"))
    with lister_for(lab_cfg) as lister:
        procs = listing(lister, "net-owners")
    httpds = by_argv(procs, "httpd", "-f", "-p", "127.0.0.1:18080")  # the server, and its child serving nc
    [httpd] = [p for p in httpds if p.ppid not in {h.member.pid for h in httpds}]
    [httpd_ip] = by_argv(procs, "httpd", "-f", "-p", f"{pod_ip}:18081")
    [nc] = by_argv(procs, "nc", "127.0.0.1", "18080")
    [outsider] = [p for p in procs if p.member.outside and p.argv[:1] == (sys.executable,)]

    listen = _one(info, protocol="tcp", state="LISTEN", local_port=18080)
    assert listen.local_address == "127.0.0.1" and listen.family == 4
    assert httpd.member.pid in {o.member.pid for o in listen.owners}
    assert {(o.member.container, o.comm) for o in listen.owners} == {("app", "httpd")}
    on_ip = _one(info, protocol="tcp", state="LISTEN", local_port=18081)
    assert on_ip.local_address == pod_ip and [o.member.pid for o in on_ip.owners] == [httpd_ip.member.pid]

    client = _one(info, protocol="tcp", state="ESTABLISHED", remote_port=18080)
    assert [(o.member.pid, o.member.container, o.comm) for o in client.owners] == [(nc.member.pid, "sidecar", "nc")]
    server = _one(info, protocol="tcp", state="ESTABLISHED", local_port=18080)
    assert server.remote_port == client.local_port
    assert {(o.member.container, o.comm) for o in server.owners} == {("app", "httpd")}

    udp = _one(info, protocol="udp", state="UNCONN", local_port=18082)
    assert (udp.local_address, udp.family) == ("127.0.0.1", 4)
    assert [(o.member.pid, o.member.outside, o.member.container) for o in udp.owners] == [
        (outsider.member.pid, True, "")]
    v6 = _one(info, protocol="tcp", state="LISTEN", local_port=18083)
    assert (v6.local_address, v6.family, [o.member.pid for o in v6.owners]) == ("::1", 6, [outsider.member.pid])

    assert _ours(info) == _ss(pod.sandbox_pid)  # the same sockets and owners as ss -p finds


def test_no_leaks_and_no_thread_moves(net: NetInspector, canonical: dict[str, LabPod]) -> None:
    me = psutil.Process()
    host_net = os.stat("/proc/1/ns/net" if os.access("/proc/1/ns/net", os.R_OK) else "/proc/2/ns/net").st_ino
    net.net_info(PodRef("default", "plain"))
    fds, children = me.num_fds(), me.children()  # other fixtures' processes may be running
    for _ in range(100):
        net.net_info(PodRef("default", "plain"))
    assert me.num_fds() == fds and me.children() == children
    assert {os.stat(f"/proc/self/task/{t}/ns/net").st_ino for t in os.listdir("/proc/self/task")} == {host_net}


# -- end to end: the real agent and the CLI ----------------------------------------------------------
@pytest.fixture(scope="module")
def agent(lab_cfg: LabConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("net-agent")
    with running_agent(lab_cfg, tmp / "agent.sock", log=tmp / "agent.log") as address:
        yield address


def cli(agent: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nsinspect.cli.main", *args, "--agent", agent],
                          capture_output=True, text=True, timeout=60)


def test_cli_net(agent: str, busy_pod: tuple[LabPod, str]) -> None:
    _, pod_ip = busy_pod
    text = cli(agent, "net", "net-owners")
    assert text.returncode == 0, text.stderr
    rows = {tuple(line.split()[:3]) for line in text.stdout.splitlines()}
    assert ("eth0", "UP", "1500") in rows and ("lo", "UNKNOWN", "65536") in rows
    lines = text.stdout.splitlines()
    assert any(line.split()[:3] == ["tcp", "LISTEN", "127.0.0.1:18080"] and line.split()[-2:] == ["app", "httpd"]
               for line in lines)
    assert any(line.split()[:3] == ["tcp", "LISTEN", f"{pod_ip}:18081"] for line in lines)
    assert any(line.split()[:3] == ["udp", "UNCONN", "127.0.0.1:18082"] and "(outside)" in line for line in lines)
    assert any(line.split()[:3] == ["tcp6", "LISTEN", "[::1]:18083"] for line in lines)
    data = json.loads(cli(agent, "net", "net-owners", "-o", "json").stdout)
    assert data["host_network"] is False and data["namespace"]["type"] == "net"
    assert {s["local_port"] for s in data["sockets"]} >= {18080, 18081, 18082, 18083}
    assert "INODE" in cli(agent, "net", "net-owners", "-o", "wide").stdout


def test_cli_net_host_network_and_errors(agent: str, canonical: dict[str, LabPod]) -> None:
    host = cli(agent, "net", "hostnet")
    assert host.returncode == 0 and "uses the node's network namespace (hostNetwork)" in host.stdout
    assert len(host.stdout.splitlines()) == 1
    missing = cli(agent, "net", "no-such-pod")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: pod default/no-such-pod not found on this node (NOT_FOUND)"
    with grpc.insecure_channel(agent) as channel, pytest.raises(grpc.RpcError) as err:
        pb_grpc.ObserveStub(channel).NetInfo(observe_pb2.NetInfoRequest(pod=agent_pb2.PodRef(name="Bad_Name")))
    assert rpc_status(err.value)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_agent_leaks_no_fds_or_helpers(agent: str, canonical: dict[str, LabPod]) -> None:
    [proc] = [p for p in psutil.process_iter(["cmdline"]) if agent in " ".join(p.info["cmdline"] or [])]
    request = observe_pb2.NetInfoRequest(pod=agent_pb2.PodRef(namespace="default", name="plain"))
    with grpc.insecure_channel(agent) as channel:
        stub = pb_grpc.ObserveStub(channel)
        stub.NetInfo(request)
        before, children = proc.num_fds(), {c.pid for c in proc.children()}  # e.g. the exec service's helper
        for _ in range(100):
            assert stub.NetInfo(request).links
    assert proc.num_fds() <= before + 2 and {c.pid for c in proc.children()} == children
