"""A pod's network namespace from the node: links, addresses and routes (rtnetlink), and its TCP/UDP
sockets (sock_diag) with the pod processes that hold them.

pyroute2 speaks netlink over two sockets made in the pod's namespace (netns.py: a helper process
makes them there, nothing else moves), so nothing here enters a namespace. Holders come from
matching socket inodes against /proc/PID/fd of the pod's processes (processes.py finds them):
O(fds of the pod).
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink import NETLINK_SOCK_DIAG
from pyroute2.netlink.diag import DiagSocket, MarshalDiag
from pyroute2.netlink.nlsocket import NetlinkSocket

from ..core.errors import NotRunning, PermissionDenied, RuntimeUnavailable
from ..core.model import PodInfo, PodRef, Source
from ..core.network import Address, Link, NetInfo, Route, Socket, SocketHolder
from ..core.nsid import NamespaceId
from ..core.process import Member
from ..procfs import procns
from .netns import netlink_sockets, open_netns
from .pinned import open_member
from .processes import ProcessLister

NETLINK_ROUTE = 0
RT_TABLE_LOCAL = 255
TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN = 1, 7, 10
_FLAGS = (("UP", 0x1), ("BROADCAST", 0x2), ("LOOPBACK", 0x8), ("POINTOPOINT", 0x10), ("RUNNING", 0x40),
          ("NOARP", 0x80), ("PROMISC", 0x100), ("MASTER", 0x400), ("SLAVE", 0x800), ("MULTICAST", 0x1000),
          ("LOWER_UP", 0x10000), ("DORMANT", 0x20000))
_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
_PROTOCOLS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 9: "ra", 16: "dhcp"}
_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast", 6: "blackhole",
          7: "unreachable", 8: "prohibit", 9: "throw"}
_FAMILIES = {socket.AF_INET: 4, socket.AF_INET6: 6}


class _PodDiagSocket(DiagSocket):  # type: ignore[misc]
    """pyroute2's DiagSocket over a socket we made in the pod's namespace (its own takes no socket)."""

    def __init__(self, sock: socket.socket) -> None:
        NetlinkSocket.__init__(self, NETLINK_SOCK_DIAG, use_socket=sock)
        self.set_marshal(MarshalDiag())


@contextmanager
def _netlink(nsfd: int) -> Iterator[tuple[Any, Any]]:
    """rtnetlink and sock_diag clients for the namespace behind `nsfd`."""
    try:
        made = netlink_sockets(nsfd, (NETLINK_ROUTE, NETLINK_SOCK_DIAG))
    except PermissionError as err:
        raise PermissionDenied(f"cannot enter the pod's network namespace: {err}") from err
    except (OSError, subprocess.SubprocessError) as err:  # includes a helper that timed out
        raise RuntimeUnavailable(f"cannot open netlink in the pod's network namespace: {err}") from err
    ipr = diag = None
    try:
        ipr = IPRoute(use_socket=made[0])
        diag = _PodDiagSocket(made[1])
        diag.bind()
        yield ipr, diag
    finally:
        for client in (ipr, diag):
            if client is not None:
                client.close()
        for s in made:
            s.close()


def _links(ipr: Any) -> tuple[list[Link], dict[int, str]]:
    links = []
    for msg in ipr.get_links():
        flags = int(msg["flags"])
        kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ("loopback" if flags & 0x8 else "")
        links.append(Link(index=int(msg["index"]), name=str(msg.get("IFLA_IFNAME") or ""), kind=str(kind),
                          state=str(msg.get("IFLA_OPERSTATE") or ""), flags=tuple(n for n, v in _FLAGS if flags & v),
                          mtu=int(msg.get("IFLA_MTU") or 0), mac=str(msg.get("IFLA_ADDRESS") or "")))
    return links, {link.index: link.name for link in links}


def _addresses(ipr: Any, names: Mapping[int, str]) -> list[Address]:
    return [Address(link=names.get(int(msg["index"]), str(msg["index"])), family=_FAMILIES.get(msg["family"], 0),
                    address=str(msg.get("IFA_ADDRESS") or msg.get("IFA_LOCAL") or ""),
                    prefix_len=int(msg["prefixlen"]), scope=_SCOPES.get(int(msg["scope"]), str(msg["scope"])))
            for msg in ipr.get_addr()]


def _routes(ipr: Any, names: Mapping[int, str]) -> list[Route]:
    routes = []
    for msg in ipr.get_routes():
        table = int(msg.get("RTA_TABLE") or msg["table"])
        if table == RT_TABLE_LOCAL or msg["family"] not in _FAMILIES:
            continue
        dst = msg.get("RTA_DST")
        oif = msg.get("RTA_OIF")
        routes.append(Route(
            family=_FAMILIES[msg["family"]], destination=f"{dst}/{msg['dst_len']}" if dst else "default",
            gateway=str(msg.get("RTA_GATEWAY") or ""), link=names.get(int(oif), str(oif)) if oif else "",
            source=str(msg.get("RTA_PREFSRC") or ""), protocol=_PROTOCOLS.get(int(msg["proto"]), str(msg["proto"])),
            scope=_SCOPES.get(int(msg["scope"]), str(msg["scope"])), metric=int(msg.get("RTA_PRIORITY") or 0),
            table=table, type=_TYPES.get(int(msg["type"]), str(msg["type"]))))
    return routes


def _sockets(diag: Any) -> list[Socket]:
    """Listening and established TCP sockets, bound and connected UDP ones, of both families."""
    found = []
    wanted = {("tcp", socket.IPPROTO_TCP): {TCP_LISTEN: "LISTEN", TCP_ESTABLISHED: "ESTABLISHED"},
              ("udp", socket.IPPROTO_UDP): {TCP_CLOSE: "UNCONN", TCP_ESTABLISHED: "ESTABLISHED"}}
    for (name, proto), states in wanted.items():
        mask = sum(1 << s for s in states)
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in diag.get_sock_stats(family=family, protocol=proto, states=mask):
                state = int(msg["idiag_state"])
                if state not in states:
                    continue
                found.append(Socket(
                    protocol=name, family=_FAMILIES[family], state=states[state], local_address=str(msg["idiag_src"]),
                    local_port=int(msg["idiag_sport"]), remote_address=str(msg["idiag_dst"]),
                    remote_port=int(msg["idiag_dport"]), inode=int(msg["idiag_inode"]), uid=int(msg["idiag_uid"])))
    return found


def socket_holders(members: tuple[Member, ...], since_ticks: int, inodes: set[int]) -> dict[int, list[SocketHolder]]:
    """Socket inode -> the members holding it, by reading /proc/PID/fd of each member."""
    owners: dict[int, list[SocketHolder]] = {}
    for m in members:
        opened = open_member(m, since_ticks)
        if opened is None:
            continue
        dirfd, fields = opened
        try:
            fdfd = os.open("fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dirfd)
        except OSError:
            os.close(dirfd)
            continue
        try:
            held = set()
            for name in os.listdir(fdfd):
                try:
                    link = os.readlink(name, dir_fd=fdfd)
                except OSError:
                    continue  # closed meanwhile
                if link.startswith("socket:[") and (ino := int(link[8:-1])) in inodes:
                    held.add(ino)
            for ino in held:
                owners.setdefault(ino, []).append(SocketHolder(m, fields[0].decode(errors="replace")))
        except OSError:
            continue  # the process exited while we read its fds
        finally:
            os.close(fdfd)
            os.close(dirfd)
    return owners


class NetInspector:
    def __init__(self, lister: ProcessLister) -> None:
        self.lister = lister

    def net_info(self, ref: PodRef) -> NetInfo:
        pod = self.lister.resolver.running(ref)
        opened = self._open(pod)
        if opened is None:
            pod = self.lister.resolver.running(ref, fresh=True)
            opened = self._open(pod)
        if opened is None:
            raise NotRunning(f"pod {pod.namespace}/{pod.name}: its sandbox exited while being read")
        nsfd, ns_id = opened
        try:
            host = procns.read_namespaces(procns.host_reference_pid(), types=("net",))
            host_net = host.ids.get("net")
            if (host_net is not None and (host_net.dev, host_net.ino) == (ns_id.dev, ns_id.ino)) or (
                    pod.sandbox is not None and pod.sandbox.options is not None
                    and pod.sandbox.options.network == "NODE"):
                return NetInfo(pod, host_network=True, namespace=ns_id)
            with _netlink(nsfd) as (ipr, diag):
                links, names = _links(ipr)
                addresses, routes, raw = _addresses(ipr, names), _routes(ipr, names), _sockets(diag)
        finally:
            os.close(nsfd)
        found = self.lister.discover_pod(pod, settle=True)
        owners = socket_holders(found.members, found.since_ticks, {s.inode for s in raw}) if found else {}
        sockets = [replace(s, owners=tuple(owners.get(s.inode, ()))) for s in raw]
        sockets.sort(key=lambda s: (s.state != "LISTEN", s.protocol, s.family, s.local_port, s.remote_port))
        warnings = ("the container runtime's CRI API is unreachable: answered from /proc",) \
            if pod.source is Source.PROC else ()
        return NetInfo(pod, False, ns_id, tuple(links), tuple(addresses), tuple(routes), tuple(sockets), warnings)

    @staticmethod
    def _open(pod: PodInfo) -> tuple[int, NamespaceId] | None:
        """The network namespace of the sandbox (or, without one, of the first running container)."""
        candidates = [(pod.sandbox.pid, pod.sandbox.start_time)] if pod.sandbox and pod.sandbox.pid else []
        candidates += [(c.pid, c.start_time) for c in pod.containers if c.state == "running" and c.pid]
        if not candidates:
            raise NotRunning(f"pod {pod.namespace}/{pod.name} has no running process to read its network from")
        return open_netns(*candidates[0])
