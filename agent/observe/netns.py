"""Into a pod's network namespace without moving the agent: the namespace opened from its process,
and netlink sockets made there by a helper process.

Netlink answers about the namespace a socket was created in, so the two netlink sockets are made
there and nothing else moves: a helper process (exec'd, single-threaded, a few lines of Python)
setns()es into the namespace fd we pass it, creates the sockets, hands them back over SCM_RIGHTS and
exits; pyroute2 then speaks netlink over them (use_socket). pyroute2 0.9's own way, NetNS or
IPRoute(netns=...), forks the calling process and runs Python in the child: inside the gRPC agent
that child crashed with SIGSEGV on about one call in five (grpc's fork handlers skip when other
threads are in gRPC), so the agent does not use it. The namespace fd is opened from the sandbox
process through its /proc/PID directory fd while a pidfd proves it is still that process, so a
recycled PID cannot hand us another pod's network.

The helper speaks the helpers' one wire (linux/helperwire.py: a JSON object and its fds in one
SEQPACKET message), but writes its two possible answers as bytes: it starts with `python -I -S`
(no site, nothing imported it does not use), and importing json and typing for helperwire would add
about 11 ms to a start of about 35 ms (-X importtime, and testbed/bench/ps.py's node).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

from ..core.nsid import NamespaceId
from ..linux.helperwire import recv_raw
from ..procfs import procns

# argv: CHANNELFD NSFD PROTOCOL...; answers {"ok": true} with one netlink socket per protocol, or {"errno": N}.
_HELPER = """
import ctypes, socket, sys
chan = socket.socket(fileno=int(sys.argv[1]))
if ctypes.CDLL(None, use_errno=True).setns(int(sys.argv[2]), 0x40000000) != 0:
    chan.send(b'{"errno": %d}' % ctypes.get_errno())
    sys.exit(1)
made = [socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, int(p)) for p in sys.argv[3:]]
socket.send_fds(chan, [b'{"ok": true}'], [s.fileno() for s in made])
"""
HELPER_TIMEOUT = 5.0


def netlink_sockets(nsfd: int, protocols: tuple[int, ...]) -> list[socket.socket]:
    """Netlink sockets created in the network namespace behind `nsfd`, by a helper process that is
    exec'd (no Python runs between fork and exec, so a threaded parent is safe) and always reaped."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fds: list[int] = []
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _HELPER, str(theirs.fileno()), str(nsfd),
                                 *map(str, protocols)], pass_fds=(nsfd, theirs.fileno()),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        theirs.close()
        try:
            ours.settimeout(HELPER_TIMEOUT)
            data, fds = recv_raw(ours)
            _, err = proc.communicate(timeout=HELPER_TIMEOUT)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
        try:
            msg = json.loads(data) if data else {}
        except ValueError:
            msg = {}
        if "errno" in msg:
            code = int(msg["errno"])
            raise OSError(code, f"setns into the pod's network namespace: {os.strerror(code)}")
        if msg != {"ok": True} or len(fds) != len(protocols):
            detail = data.decode(errors="replace") or err.decode(errors="replace").strip()[-200:] or "no answer"
            raise OSError(f"the namespace helper failed: {detail}")
        made, fds = [socket.socket(fileno=fd) for fd in fds], []
        return made
    finally:
        for fd in fds:
            os.close(fd)
        ours.close()
        theirs.close()


def open_netns(pid: int, start_ticks: int) -> tuple[int, NamespaceId] | None:
    """An fd of `pid`'s network namespace, if `pid` is still the process that started at `start_ticks`."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        dirfd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        os.close(pidfd)
        return None
    nsfd = -1
    try:
        if start_ticks and int(procns.stat_fields(procns.read_at(dirfd, "stat", 4096))[19]) != start_ticks:
            return None
        nsfd = os.open("ns/net", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
        signal.pidfd_send_signal(pidfd, 0)  # still alive, so the namespace is that process's
        st = os.fstat(nsfd)
        found, nsfd = (nsfd, NamespaceId("net", st.st_dev, st.st_ino)), -1
        return found
    except (ProcessLookupError, FileNotFoundError):
        return None
    finally:
        for fd in (nsfd, dirfd, pidfd):
            if fd >= 0:
                os.close(fd)
