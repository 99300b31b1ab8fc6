"""An independent, deliberately simple reader of /proc/PID/ns, to check the lab and the agent against."""

from __future__ import annotations

import os

NS_TYPES = ("mnt", "pid", "net", "ipc", "uts", "cgroup", "user", "time")


def ns_ids(pid: int) -> dict[str, tuple[int, int]]:
    """(st_dev, st_ino) of each namespace of `pid`."""
    ids = {}
    for ns in NS_TYPES:
        st = os.stat(f"/proc/{pid}/ns/{ns}")
        ids[ns] = (st.st_dev, st.st_ino)
    return ids


def host_pid() -> int:
    """PID 1 where it can be read, else kthreadd (PID 2), which always lives in the initial namespaces."""
    try:
        os.stat("/proc/1/ns/net")
    except PermissionError:
        return 2
    return 1
