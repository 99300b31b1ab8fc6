"""A pod's network namespace as values: its links, addresses and routes, its TCP/UDP sockets and
the pod processes holding them (SocketHolder), all in one NetInfo.

Filled by observe/network.py, read by the server's wire mapping; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import PodInfo
from .nsid import NamespaceId
from .process import Member


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str
    state: str
    flags: tuple[str, ...]
    mtu: int
    mac: str


@dataclass(frozen=True)
class Address:
    link: str
    family: int
    address: str
    prefix_len: int
    scope: str


@dataclass(frozen=True)
class Route:
    family: int
    destination: str
    gateway: str
    link: str
    source: str
    protocol: str
    scope: str
    metric: int
    table: int
    type: str


@dataclass(frozen=True)
class SocketHolder:
    """A pod process with an fd of the socket (found in its /proc/PID/fd), and its command name."""

    member: Member
    comm: str


@dataclass(frozen=True)
class Socket:
    protocol: str
    family: int
    state: str
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    inode: int
    uid: int
    owners: tuple[SocketHolder, ...] = ()


@dataclass(frozen=True)
class NetInfo:
    pod: PodInfo
    host_network: bool
    namespace: NamespaceId | None = None
    links: tuple[Link, ...] = ()
    addresses: tuple[Address, ...] = ()
    routes: tuple[Route, ...] = ()
    sockets: tuple[Socket, ...] = ()
    warnings: tuple[str, ...] = ()
