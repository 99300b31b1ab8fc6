"""The agent's check, from the node's side, that a session's reaper is confined as the container.

The enterer confines itself (confine.py) and forks the reaper, which waits for the agent's go
before it starts the command. The check reads both processes' /proc from the agent's side, where
neither a seccomp filter nor anything else of the pod's can bend what the kernel reports, so a
confinement step that silently did nothing (an ignored write, a syscall a filter answered with 0)
refuses the session instead of starting an unconfined command. The LSM label is the one part not
checked here: it is taken at the command's execve, after the go.
"""

from __future__ import annotations

CAPS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")
IDS = ("Uid", "Gid", "Groups")


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in f if ":" in line)}


def _read(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/{name}") as f:
        return f.read()


def mismatch(target: int, reaper: int, skip: set[str], same_ids: bool, privileged: bool) -> str:
    """What differs ("" when nothing does). `skip`: parts not to check (only ever what the enterer
    could not reproduce for a caller with nsenter semantics); `same_ids`: no --user/--group
    override, so ids must match too."""
    if privileged:
        return ""
    try:
        theirs, ours = _status(target), _status(reaper)
        # With --user/--group the ids are the caller's, and the capabilities follow from them by
        # execve's rules (a uid other than 0 keeps none): only what the ids do not decide is compared.
        fields = [*CAPS, *IDS] if same_ids else ["NoNewPrivs"]
        if "seccomp" not in skip:
            fields.append("Seccomp")
            filters = "1" if theirs.get("Seccomp") == "2" else "0"
            if ours.get("Seccomp_filters", filters) != filters:
                return f"Seccomp_filters: {ours.get('Seccomp_filters')} (expected {filters}: the runtime's filter)"
        for name in fields:
            if theirs.get(name) != ours.get(name):
                return f"{name}: {ours.get(name)} (the container's: {theirs.get(name)})"
        for name, part in (("cgroup", "cgroups"), ("oom_score_adj", "oom_score_adj"), ("limits", "rlimits")):
            if part not in skip and _read(target, name) != _read(reaper, name):
                return f"{name} differs from the container's"
    except (OSError, ValueError) as err:
        return f"cannot read the processes' /proc: {err}"
    return ""
