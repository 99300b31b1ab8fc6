"""What each container should share, from the pod's facts, checked against what it got.

The rules are the kubelet's and the runtimes' (shared notes, kubernetes-facts.md): net, ipc and
uts come from the sandbox unless the pod uses the host's; pid is the container's own, the
sandbox's (shareProcessNamespace), the host's (hostPID) or its target's (targetContainerName,
ignored when either of the former applies); mnt is never shared; cgroup namespaces are private
only on cgroup v2; user is the host's unless hostUsers is false; time is always the host's.
Holders are named "host", "sandbox", "own" or "container:NAME".
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.model import (
    NS_TYPES,
    Check,
    ContainerInfo,
    ContainerVerification,
    PodFacts,
    PodInfo,
    PodNamespaces,
    Verdict,
)

HOST, SANDBOX, OWN = "host", "sandbox", "own"


@dataclass(frozen=True)
class Facts:
    """PodFacts with every gap filled from the runtime's view of the sandbox."""

    host_network: bool
    host_pid: bool
    host_ipc: bool
    share_pid: bool
    host_users: bool
    cgroup_mode: str


@dataclass(frozen=True)
class Expectation:
    holder: str
    why: str


def effective_facts(pod: PodInfo, given: PodFacts, cgroup_mode: str) -> Facts:
    opts = pod.sandbox.options if pod.sandbox else None

    def pick(value: bool | None, mode: str, wanted: str) -> bool:
        return (mode == wanted) if value is None else value

    return Facts(
        host_network=pick(given.host_network, opts.network if opts else "", "NODE"),
        host_pid=pick(given.host_pid, opts.pid if opts else "", "NODE"),
        host_ipc=pick(given.host_ipc, opts.ipc if opts else "", "NODE"),
        share_pid=pick(given.share_process_namespace, opts.pid if opts else "", "POD"),
        host_users=True if given.host_users is None else given.host_users,
        cgroup_mode=cgroup_mode,
    )


def pid_intent(pod: PodInfo, container: ContainerInfo, given: PodFacts) -> tuple[str, str]:
    """(holder the pid namespace should be, why) as far as this container alone says:
    the spec's targetContainerName, else the pid mode the runtime was asked for."""
    if container.name in given.target_container_name:
        return f"container:{given.target_container_name[container.name]}", "targetContainerName"
    mode = container.options.pid if container.options else ""
    if mode == "TARGET" and container.options:
        target_id = container.options.target_id
        name = next((c.name for c in pod.containers if c.id == target_id), target_id[:13])
        return f"container:{name}", "the runtime's pid mode TARGET"
    spec_silent = given.host_pid is None and given.share_process_namespace is None
    if spec_silent and mode == "POD":
        return SANDBOX, "the runtime's pid mode POD"
    if spec_silent and mode == "NODE":
        return HOST, "the runtime's pid mode NODE"
    return "", ""


def expectation(type_: str, facts: Facts, intent: tuple[str, str] = ("", ""),
                privileged: bool = False) -> Expectation:
    if type_ in ("net", "uts"):
        return Expectation(HOST, "hostNetwork") if facts.host_network else Expectation(SANDBOX, "pod network")
    if type_ == "ipc":
        return Expectation(HOST, "hostIPC") if facts.host_ipc else Expectation(SANDBOX, "pod IPC")
    if type_ == "pid":
        holder, why = intent
        target = holder.removeprefix("container:") if holder.startswith("container:") else ""
        ignored = f"; targetContainerName {target!r} is ignored" if target else ""
        if facts.host_pid:
            return Expectation(HOST, f"hostPID{ignored}")
        if facts.share_pid:
            return Expectation(SANDBOX, f"shareProcessNamespace{ignored}")
        return Expectation(holder, why) if holder else Expectation(OWN, "no shared process namespace")
    if type_ == "mnt":
        return Expectation(OWN, "mount namespaces are never shared")
    if type_ == "cgroup":
        if privileged:
            return Expectation(HOST, "privileged containers keep the host's cgroup namespace")
        if facts.cgroup_mode == "v2":
            return Expectation(OWN, "cgroup v2")
        return Expectation(HOST, f"cgroup {facts.cgroup_mode}: runtimes make private cgroup namespaces only on v2")
    if type_ == "user":
        return Expectation(HOST, "hostUsers") if facts.host_users else Expectation(SANDBOX, "hostUsers: false")
    return Expectation(HOST, "Kubernetes does not use time namespaces")


def describe(holder: str) -> str:
    if holder == HOST:
        return "the host's"
    if holder == SANDBOX:
        return "the pod sandbox's"
    if holder == OWN:
        return "its own"
    return f"the namespace of {holder.split(':', 1)[1]!r}"


def hint(type_: str, expected: str, actual: str) -> str:
    """A likely cause for the well-known mismatches."""
    if type_ == "pid" and expected.startswith("container:") and actual == SANDBOX:
        return ": this runtime ignores TARGET (containerd < 1.5 does)"
    if type_ == "pid" and expected.startswith("container:") and actual == OWN:
        return ": the runtime did not join the target's pid namespace"
    return ""


class _Verifier:
    def __init__(self, pod: PodInfo, given: PodFacts, cgroup_mode: str, reads: PodNamespaces) -> None:
        self.reads = reads
        facts = effective_facts(pod, given, cgroup_mode)
        self.expected: dict[str, dict[str, Expectation]] = {}
        for c in pod.containers:
            intent = pid_intent(pod, c, given)
            self.expected[c.name] = {t: expectation(t, facts, intent, c.privileged) for t in NS_TYPES}

    def actual(self, name: str, type_: str) -> str:
        """Who else holds this container's namespace; sharers that target it do not count."""
        mine = self.reads.containers[name].ids[type_]
        if self.reads.host.ids.get(type_) == mine:
            return HOST
        if self.reads.sandbox is not None and self.reads.sandbox.ids.get(type_) == mine:
            return SANDBOX
        for other, proc in sorted(self.reads.containers.items()):
            targets_me = other in self.expected and self.expected[other][type_].holder == f"container:{name}"
            if other != name and proc.ids.get(type_) == mine and not targets_me:
                return f"container:{other}"
        return OWN

    def check(self, name: str, type_: str) -> Check:
        want = self.expected[name][type_]
        proc = self.reads.containers[name]
        if type_ not in proc.ids:
            return Check(type_, want.holder, "", Verdict.UNKNOWN,
                         f"{type_}: cannot tell, {proc.error or 'the namespace is not readable'}")
        reference = None if want.holder == OWN else self.reads.holder(want.holder)
        if want.holder != OWN and (reference is None or type_ not in reference.ids):
            return Check(type_, want.holder, "", Verdict.UNKNOWN,
                         f"{type_}: expected {describe(want.holder)} ({want.why}), which cannot be read")
        if reference is not None and reference.ids[type_] == proc.ids[type_]:
            actual = want.holder
        else:
            actual = self.actual(name, type_)
        if actual == want.holder:
            return Check(type_, want.holder, actual, Verdict.OK,
                         f"{type_}: {describe(want.holder)}, as expected ({want.why})")
        return Check(type_, want.holder, actual, Verdict.MISMATCH,
                     f"{type_}: expected {describe(want.holder)} ({want.why}); actually {describe(actual)}"
                     f"{hint(type_, want.holder, actual)}")


def verify(pod: PodInfo, given: PodFacts, cgroup_mode: str, reads: PodNamespaces,
           only: str = "") -> list[ContainerVerification]:
    """One verification per read container (or just `only`), each namespace type the host has."""
    verifier = _Verifier(pod, given, cgroup_mode, reads)
    return [ContainerVerification(name, tuple(verifier.check(name, t) for t in NS_TYPES if t in reads.host.ids))
            for name in reads.containers if name in verifier.expected and (not only or name == only)]
