"""A helper's start, before its first session: into its cgroup, its lazy code loaded and its pages
warmed, then its import system sealed.

A forked Python process pays a copied page for every page it first writes (reference counts), so the
enterer's reading code runs once on the helper itself while nobody waits, and every enterer forked
after that finds its pages already written. The sealing is the security half: an enterer runs Python
after joining the container's mount namespace, where every path names a file of the pod's, so from
here on nothing is imported and no file is read of the helper's own accord.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import linecache
import os
import sys
import warnings

from ..core.plan import Plan
from ..linux.syscalls import PR_CAPBSET_READ, prctl
from . import confine
from .creds import RunAs, read_environ
from .join import HeldProcess, choose_namespaces
from .spawn import find_program


def join_cgroup(path: str) -> bool:
    """Move this process into a cgroup. Costs an RCU grace period (5-20 ms), so the fork server does
    it once, and every session's processes inherit the cgroup by fork."""
    try:
        fd = os.open(f"{path}/cgroup.procs", os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    except OSError as err:
        sys.stderr.write(f"nsinspect-enter: cannot join cgroup {path}: {err}\n")
        return False
    return True


def make_ready(cgroup: str) -> None:
    """A helper's start: into its cgroup, the cgroup mounts read once for every enterer, whatever
    the enterer's code loads lazily loaded now, then nothing more loaded at all."""
    if cgroup:
        join_cgroup(cgroup)
    confine.cgroup_mounts()
    warm_up()
    seal()


def seal() -> None:
    """From here on this process (and every enterer it forks) imports nothing and reads no file of
    its own accord: only what is already loaded runs. An enterer runs Python after joining the
    container's mount namespace, where every path names a file of the pod's; an import (a lazy one
    in the standard library, a codec looked up by name) or a warning's source line would read it."""
    sys.meta_path[:] = [finder for finder in sys.meta_path
                        if finder in (importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter)]
    sys.path_hooks.clear()
    sys.path_importer_cache.clear()
    sys.path[:] = []
    warnings.simplefilter("ignore")
    linecache.clearcache()
    linecache.getlines = lambda *_args, **_kwargs: []
    linecache.updatecache = lambda *_args, **_kwargs: []


def warm_up() -> None:
    """Run the enterer's reading code once on ourselves while nobody waits: a forked Python process
    pays a copied page for every page it first writes (reference counts), so pay them now."""
    with contextlib.suppress(Exception):
        me = HeldProcess.open(os.getpid(), 0)
        try:
            plan = Plan.from_json(Plan(pid=me.pid, start_time=0, argv=("true",)).to_json())
            choose_namespaces(plan, me)
            RunAs.read(me, False)
            read_environ(me, plan)
            find_program("true", {b"PATH": os.defpath.encode()})
            for cap in range(41):
                prctl(PR_CAPBSET_READ, cap)  # the same ctypes path as the drops
        finally:
            me.close()
