"""Who the command runs as, and with what environment: the target's credentials and environment.

Read from /proc/PID before joining (ids translated into the user namespace being joined) and
taken after it, so the command starts as the container's own process would (nsenter semantics).
Apart from the enterer's steps because this alone decides the command's identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..core.plan import Plan
from ..linux.syscalls import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_SET_KEEPCAPS,
    PR_SET_NO_NEW_PRIVS,
    capset,
    prctl,
)
from . import toolbox
from .join import HeldProcess


def _id_map(raw: bytes) -> list[tuple[int, int, int]]:
    return [(int(a), int(b), int(c)) for a, b, c in (line.split() for line in raw.splitlines() if line.strip())]


def _inside(value: int, mapping: list[tuple[int, int, int]]) -> int | None:
    """A host-side id as seen inside a user namespace with this uid_map/gid_map (as read from outside)."""
    for inside, outside, count in mapping:
        if outside <= value < outside + count:
            return inside + value - outside
    return None


def _or_overflow(value: int | None) -> int:
    return 65534 if value is None else value  # the kernel's overflow id for what a namespace cannot map


@dataclass(frozen=True)
class RunAs:
    """Who the command runs as: the target's ids, groups and capabilities from /proc/PID/status, as
    ids inside the user namespace joined."""

    uids: tuple[int, int, int]
    gids: tuple[int, int, int]
    groups: tuple[int, ...]
    inheritable: int
    permitted: int
    effective: int
    bounding: int
    ambient: int
    no_new_privs: bool
    last_cap: int = 40

    @classmethod
    def read(cls, target: HeldProcess, joins_user: bool) -> RunAs:
        status = dict(line.split(":", 1) for line in target.read("status").decode().splitlines() if ":" in line)
        uids = [int(v) for v in status["Uid"].split()[:3]]
        gids = [int(v) for v in status["Gid"].split()[:3]]
        groups = [int(v) for v in status.get("Groups", "").split()]
        if joins_user:
            umap, gmap = _id_map(target.read("uid_map")), _id_map(target.read("gid_map"))
            uids = [_or_overflow(_inside(u, umap)) for u in uids]
            gids = [_or_overflow(_inside(g, gmap)) for g in gids]
            groups = [g for g in (_inside(g, gmap) for g in groups) if g is not None]
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            last_cap = int(f.read())

        def cap(name: str) -> int:
            return int(status.get(name, "0").strip(), 16)

        return cls((uids[0], uids[1], uids[2]), (gids[0], gids[1], gids[2]), tuple(groups),
                   cap("CapInh"), cap("CapPrm"), cap("CapEff"), cap("CapBnd"), cap("CapAmb"),
                   status.get("NoNewPrivs", "0").strip() == "1", last_cap)

    def apply(self, user: int | None, group: int | None) -> None:
        """Become the target (or user/group): groups, bounding set, ids (keeping caps), capability sets."""
        os.setgroups(list(self.groups))
        for cap in range(self.last_cap + 1):
            if not self.bounding >> cap & 1:
                prctl(PR_CAPBSET_DROP, cap)
        prctl(PR_SET_KEEPCAPS, 1)
        os.setresgid(*((group,) * 3 if group is not None else self.gids))
        os.setresuid(*((user,) * 3 if user is not None else self.uids))
        capset(self.effective & self.permitted, self.permitted, self.inheritable & self.bounding)
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        for cap in range(self.last_cap + 1):
            if self.ambient >> cap & 1:
                prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
        prctl(PR_SET_KEEPCAPS, 0)
        if self.no_new_privs:
            prctl(PR_SET_NO_NEW_PRIVS, 1)


def read_environ(target: HeldProcess, plan: Plan) -> dict[bytes, bytes]:
    """The container's environment as CRI exec gives it (its spec's), with the caller's additions;
    without the spec, the target's own. Never for a command with the agent's powers (--privileged):
    the spec's variables are the pod's to write too, and LD_PRELOAD, ENV (sourced by an interactive
    sh) or PS1 would run the pod's code as the node's root. It gets PATH and the caller's alone."""
    if plan.privileged:
        items = [b"PATH=" + os.defpath.encode()]
    elif plan.base_env is not None:
        items = [os.fsencode(item) for item in plan.base_env]
    else:
        items = target.read("environ").split(b"\0")
    env = dict(item.split(b"=", 1) for item in items if b"=" in item)
    if plan.tools:
        env[b"PATH"] = toolbox.PATH.encode()
    env.update((os.fsencode(k), os.fsencode(v)) for k, v in plan.env)
    return env
