"""Who the stand-in's clients are and what they may do: bearer tokens (with audiences) for a small
table of users, and RBAC-like grants evaluated the way the RBAC authorizer does.

It answers the API server's own authentication and authorization, and the TokenReview and
SubjectAccessReview APIs that a delegating agent calls (shapes in kubernetes-facts.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
MASTERS = "system:masters"


@dataclass(frozen=True)
class User:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def info(self) -> Json:
        """The `user` object of a TokenReview status / SelfSubjectReview."""
        out: Json = {"username": self.name, "uid": self.uid, "groups": [*self.groups, "system:authenticated"]}
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra}
        return out


@dataclass(frozen=True)
class Token:
    value: str
    user: User
    audiences: tuple[str, ...] = (API_AUDIENCE,)


@dataclass(frozen=True)
class Rule:
    """One PolicyRule bound to one subject; `namespaces=None` is a ClusterRoleBinding."""

    verbs: frozenset[str]
    resources: frozenset[str]  # "pods", "pods/ephemeralcontainers", "*", "pods/*"
    api_groups: frozenset[str] = frozenset({""})
    namespaces: frozenset[str] | None = None
    names: frozenset[str] | None = None
    binding: str = "test-binding"
    role: str = "test-role"

    def allows(self, verb: str, group: str, resource: str, *, subresource: str, namespace: str, name: str) -> bool:
        full = f"{resource}/{subresource}" if subresource else resource
        return ((verb in self.verbs or "*" in self.verbs)
                and (group in self.api_groups or "*" in self.api_groups)
                and (full in self.resources or "*" in self.resources
                     or (bool(subresource) and f"{resource}/*" in self.resources))
                and (self.namespaces is None or namespace in self.namespaces)
                and (self.names is None or name in self.names))


def rule(verbs: str, resources: str, *, group: str = "", namespaces: Iterable[str] | None = None,
         names: Iterable[str] | None = None, binding: str = "test-binding", role: str = "test-role") -> Rule:
    """A rule from space-separated verbs and resources: `rule("get list", "pods pods/log")`."""
    return Rule(frozenset(verbs.split()), frozenset(resources.split()), frozenset({group}),
                None if namespaces is None else frozenset(namespaces), None if names is None else frozenset(names),
                binding, role)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


@dataclass
class Authority:
    """Tokens and grants; tests add their own with `add_token` and `grant`."""

    tokens: dict[str, Token] = field(default_factory=dict)
    grants: list[tuple[str, Rule]] = field(default_factory=list)  # (subject "user:x" or "group:y", rule)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_token(self, token: Token) -> Token:
        with self.lock:
            self.tokens[token.value] = token
        return token

    def grant(self, subject: str, *rules: Rule) -> None:
        """`subject` is `user:NAME` or `group:NAME`."""
        with self.lock:
            self.grants += [(subject, r) for r in rules]

    def authenticate(self, token: str, audiences: Iterable[str] = (API_AUDIENCE,)) -> tuple[User | None, list[str]]:
        """The user and the audiences both sides share; no user when unknown or no audience matches."""
        with self.lock:
            found = self.tokens.get(token)
        if found is None:
            return None, []
        shared = [a for a in audiences if a in found.audiences]
        return (found.user, shared) if shared else (None, [])

    def authorize(self, user: str, groups: Iterable[str], verb: str, *, group: str = "", resource: str = "",
                  subresource: str = "", namespace: str = "", name: str = "") -> Decision:
        groups = set(groups) | {"system:authenticated"}
        if MASTERS in groups:
            return Decision(True)
        with self.lock:
            grants = list(self.grants)
        for subject, r in grants:
            kind, _, who = subject.partition(":")
            if ((kind == "user" and who == user) or (kind == "group" and who in groups)) and \
                    r.allows(verb, group, resource, subresource=subresource, namespace=namespace, name=name):
                scope = "RoleBinding" if r.namespaces is not None else "ClusterRoleBinding"
                subject_kind = "User" if kind == "user" else "Group"
                where = f'/{sorted(r.namespaces)[0]}' if r.namespaces else ""
                return Decision(True, f'RBAC: allowed by {scope} "{r.binding}{where}" of ClusterRole "{r.role}" '
                                      f'to {subject_kind} "{who}"')
        return Decision(False)

    # -- review APIs ----------------------------------------------------------------------
    def token_review(self, review: Json) -> Json:
        spec = review.get("spec") or {}
        wanted = spec.get("audiences") or [API_AUDIENCE]
        user, shared = self.authenticate(spec.get("token") or "", wanted)
        with self.lock:
            known = self.tokens.get(spec.get("token") or "")
        status: Json
        if user is not None:
            status = {"authenticated": True, "user": user.info(), "audiences": shared}
        elif known is not None:
            status = {"user": {}, "error": f"[invalid bearer token, token audiences {_golist(known.audiences)} is "
                                           f"invalid for the target audiences {_golist(wanted)}]"}
        else:
            status = {"user": {}, "error": "[invalid bearer token, token lookup failed]"}
        return {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}

    def access_review(self, review: Json, kind: str = "SubjectAccessReview",
                      as_user: User | None = None) -> Json:
        spec = review.get("spec") or {}
        user = as_user.name if as_user else spec.get("user") or ""
        groups = [*as_user.groups] if as_user else list(spec.get("groups") or [])
        attrs = spec.get("resourceAttributes")
        if attrs is not None:
            decision = self.authorize(user, groups, attrs.get("verb") or "", group=attrs.get("group") or "",
                                      resource=attrs.get("resource") or "",
                                      subresource=attrs.get("subresource") or "",
                                      namespace=attrs.get("namespace") or "", name=attrs.get("name") or "")
        else:
            decision = Decision(MASTERS in groups)
        status: Json = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
        return {"kind": kind, "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}


def _golist(values: Iterable[str]) -> str:
    return "[" + " ".join(f'"{v}"' for v in values) + "]"


# The test users every stand-in starts with; docs in testbed/cluster/README.md.
ADMIN = User("admin", "uid-admin", (MASTERS,))
ALICE = User("alice", "uid-alice", ("developers",))
BOB = User("bob", "uid-bob", ("debuggers",))
AGENT = User("system:serviceaccount:nsinspect-system:nsinspect-agent", "uid-agent-sa",
             ("system:serviceaccounts", "system:serviceaccounts:nsinspect-system"))
AGENT_AUDIENCE = "nsinspect"  # what the agent asks TokenReview for (agent/server/auth.py AUDIENCE)
# The users' kubeconfig tokens are good for the agent too, as on an API server whose
# --api-audiences lists nsinspect; the CLI sends them to the agent as they are.
USER_AUDIENCES = (API_AUDIENCE, AGENT_AUDIENCE)


def default_authority() -> Authority:
    auth = Authority()
    for token in (Token("admin-token", ADMIN, USER_AUDIENCES), Token("alice-token", ALICE, USER_AUDIENCES),
                  Token("bob-token", BOB, USER_AUDIENCES), Token("agent-token", AGENT),
                  Token("alice-agent-token", ALICE, (AGENT_AUDIENCE,)),
                  Token("bob-agent-token", BOB, (AGENT_AUDIENCE, API_AUDIENCE))):
        auth.add_token(token)
    # alice reads pods and nodes, nothing more.
    auth.grant("user:alice", rule("get list watch", "pods nodes", binding="alice-view", role="view"))
    # bob may also debug: ephemeral containers and port-forward (the `kubectl debug` set).
    auth.grant("group:debuggers",
               rule("get list watch", "pods nodes", binding="debuggers", role="debugger"),
               rule("get patch update", "pods/ephemeralcontainers", binding="debuggers", role="debugger"),
               rule("create get", "pods/portforward pods/attach", binding="debuggers", role="debugger"))
    # the agent's ServiceAccount holds system:auth-delegator.
    auth.grant(f"user:{AGENT.name}",
               rule("create", "tokenreviews", group="authentication.k8s.io", binding="nsinspect-agent",
                    role="system:auth-delegator"),
               rule("create", "subjectaccessreviews", group="authorization.k8s.io", binding="nsinspect-agent",
                    role="system:auth-delegator"))
    # every authenticated user may ask about itself (system:basic-user).
    auth.grant("group:system:authenticated",
               rule("create", "selfsubjectaccessreviews", group="authorization.k8s.io",
                    binding="system:basic-user", role="system:basic-user"),
               rule("create", "selfsubjectreviews", group="authentication.k8s.io",
                    binding="system:basic-user", role="system:basic-user"))
    return auth
