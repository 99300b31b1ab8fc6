"""Which RPC needs which permission: POLICY, the one table, and what makes an Exec ask for more."""

from __future__ import annotations

from dataclasses import dataclass

from nsinspect.proto import exec_pb2


@dataclass(frozen=True)
class Permission:
    """What a SubjectAccessReview asks: verb on resource/subresource (core API group)."""

    verb: str
    resource: str
    subresource: str = ""

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}{'/' + self.subresource if self.subresource else ''}"


GET_POD = Permission("get", "pods")
CREATE_EXEC = Permission("create", "pods", "exec")
# Subresources the API server does not serve; RBAC evaluates them all the same, so they exist only
# as the agent's checks (deploy/daemonset.yaml binds them). Never nodes/proxy: that is a real
# kubelet-API permission.
CREATE_NSENTER = Permission("create", "pods", "nsenter")
GET_NODE_NSMAP = Permission("get", "nodes", "nsmap")


@dataclass(frozen=True)
class Rule:
    needs: tuple[Permission, ...]  # all of them, on the target (a pod, or this node)
    elevated: tuple[Permission, ...] = ()  # also, when the request asks for more than the container's own powers
    local_only: bool = False  # only for root on the node (the unix socket)
    pending: bool = False  # open without a session: pending (server/admission.py) from admission to its end


# THE policy: which RPC needs which permission. Handlers name their RPC; nothing else decides.
POLICY: dict[str, Rule] = {
    "Inspect": Rule((GET_POD,)),  # ns, verify
    "ListProcesses": Rule((GET_POD,)),  # ps
    "NetInfo": Rule((GET_POD,)),  # net
    "NodeMap": Rule((GET_NODE_NSMAP,)),  # nsmap: every namespace of this node
    # exec as the container runs (all its namespaces, its uid, gid, capabilities and root): what
    # `kubectl exec` allows; anything more needs pods/nsenter too (see exec_elevation).
    "Exec": Rule((CREATE_EXEC,), elevated=(CREATE_NSENTER,)),
    # the service schema, for grpcurl on the node; a stream that holds a worker while open
    "ServerReflectionInfo": Rule((), local_only=True, pending=True),
}


def exec_elevation(start: exec_pb2.ExecStart) -> str:
    """Why an Exec asks for more than the container's own powers ("" when it does not). A subset
    of namespaces leaves the command in some of the node's (its pids, its network); another root
    is any directory the agent can reach. The working directory is not here: it is entered with
    the container's credentials (agent/enter/helper.py), so it reaches no further than the container."""
    why = [flag for flag, asked in (("--privileged", start.privileged), ("--user", start.HasField("user")),
                                    ("--group", start.HasField("group")), ("--tools", start.tools),
                                    ("--ns", bool(start.namespaces)), ("--root", bool(start.root))) if asked]
    return ", ".join(why)

