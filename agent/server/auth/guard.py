"""May the caller do this: the `Authorizer` (SubjectAccessReviews, cached) and the `Guard`, which
every handler asks about its target before touching anything, and the interceptor about every
call (`Guard.admit`). One audit line and one counted decision per call."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from ...core.errors import NsinspectError, PermissionDenied, ResourceExhausted
from ...core.model import PodRef
from .. import audit
from ..admission import Limits, Pending
from ..audit import AuditLog
from ..metrics import Metrics
from ..status import abort, status_of
from .authn import Authenticator
from .policy import POLICY, Permission
from .review import AuthUnavailable, Decision, Identity, Reviewer, TtlCache

log = logging.getLogger(__name__)


class Authorizer:
    """SubjectAccessReviews, one permission on one target at a time, cached; root on the unix socket may do anything."""

    def __init__(self, reviewer: Reviewer, ttl: float = 10.0) -> None:
        self.reviewer = reviewer
        self._cache: TtlCache[tuple[Any, ...], Decision] = TtlCache(ttl)

    def check(self, who: Identity, permission: Permission, namespace: str, name: str) -> Decision:
        if who.via == "unix":
            return Decision(True, "the agent's unix socket: root on the node")
        key = (who.user, who.uid, who.groups, who.extra, permission, namespace, name)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        try:
            decision = self.reviewer.access_review(who, permission, namespace, name)
        except NsinspectError:
            raise
        except Exception as err:  # an answer we cannot read: fail closed
            log.error("unreadable SubjectAccessReview answer", extra={"error": str(err)})
            raise AuthUnavailable("cannot verify permission: the API server's answer was unreadable") from None
        self._cache.put(key, decision)
        return decision


@dataclass(frozen=True)
class Target:
    """What a SubjectAccessReview names (namespace "" for nodes), how messages and the audit name it."""

    namespace: str
    name: str
    where: str
    audit: dict[str, str]


class Guard:
    """What handlers call before touching a target: the caller's identity if POLICY allows the call,
    else PermissionDenied / Unauthenticated / AuthUnavailable. Every decision is audited and counted."""

    def __init__(self, authenticator: Authenticator, authorizer: Authorizer, audit: AuditLog,
                 node_name: str = "", metrics: Metrics | None = None, *, pending: Pending | None = None) -> None:
        self.authenticator, self.authorizer, self.audit, self.node_name = authenticator, authorizer, audit, node_name
        self.metrics = metrics or Metrics()
        self.pending = pending if pending is not None else Pending(Limits())

    def decided(self, entry: dict[str, Any]) -> None:
        """One decision: its audit line, and nsinspect_authz_decisions_total{rpc,decision}."""
        self.audit.call(entry)
        self.metrics.decision(entry["rpc"], entry["decision"])

    def pod(self, context: grpc.ServicerContext, rpc: str, ref: PodRef, elevated: str = "") -> Identity:
        """`rpc` on pod `ref`; `elevated` says why the request wants the rule's elevated permissions too.
        A ref by UID alone is checked without a name (RBAC then wants the permission on every pod)."""
        where = f"pod {ref.namespace}/{ref.name}" if ref.name else f"pods with uid {ref.uid}"
        target = Target(ref.namespace, ref.name, where, audit.target(ref))
        return self._check(context, rpc, target, elevated)

    def node(self, context: grpc.ServicerContext, rpc: str) -> Identity:
        return self._check(context, rpc, Target("", self.node_name, f"node {self.node_name}",
                                                {"node": self.node_name}))

    def _check(self, context: grpc.ServicerContext, rpc: str, target: Target, elevated: str = "") -> Identity:
        try:
            return self._decide(context, rpc, target, elevated)
        finally:
            self.pending.release(context)  # decided: a stream waits on its caller no more

    def _decide(self, context: grpc.ServicerContext, rpc: str, target: Target, elevated: str) -> Identity:
        rule = POLICY[rpc]
        needs = rule.needs + (rule.elevated if elevated else ())
        entry: dict[str, Any] = {"rpc": rpc, "peer": context.peer(), "target": target.audit,
                                 "permissions": [str(p) for p in needs]}
        if elevated:
            entry["elevated"] = elevated
        who = self.authenticator.identify(context)  # the interceptor's answer for this call
        entry["caller"] = who.audit()
        reasons = []
        for permission in needs:
            try:
                decision = self.authorizer.check(who, permission, target.namespace, target.name)
            except NsinspectError as err:
                self.decided({**entry, "decision": "error", "code": status_of(err).name, "reason": str(err)})
                raise
            if not decision.allowed:
                why = f"{rpc} with {elevated}" if permission in rule.elevated else rpc
                message = (f'user "{who.user}" may not {permission} on {target.where} (needed for {why})'
                           f"{': ' + decision.reason if decision.reason else ''}")
                self.decided({**entry, "decision": "deny", "code": "PERMISSION_DENIED", "reason": message})
                raise PermissionDenied(message)
            reasons.append(decision.reason)
        self.decided({**entry, "decision": "allow", "code": "OK", "reason": "; ".join(r for r in reasons if r)})
        return who

    def admit(self, context: grpc.ServicerContext, method: str, request: Any) -> None:
        """The interceptor's half: authenticate; refuse RPCs the policy does not know, and pending
        streams beyond their limits; allow RPCs that need nothing more. Aborts the call on refusal.
        (Exec is pending only while its handler waits for `start`: agent/server/exec_service.py.)"""
        rpc = method.rsplit("/", 1)[-1]
        entry: dict[str, Any] = {"rpc": rpc, "peer": context.peer(), "caller": None}
        pod = getattr(request, "pod", None)  # unary requests are here already: name the target
        if pod is not None and hasattr(pod, "namespace"):
            entry["target"] = audit.target(pod)

        def refuse(err: NsinspectError) -> NoReturn:
            self.decided({**entry, "decision": "deny", "code": status_of(err).name, "reason": str(err)})
            abort(context, err)

        try:
            who = self.authenticator.identify(context)
        except NsinspectError as err:
            refuse(err)
        entry["caller"] = who.audit()
        rule = POLICY.get(rpc)
        if rule is None:
            refuse(PermissionDenied(f"the agent has no policy for {method}: refused"))
        if rule.local_only and who.via != "unix":
            refuse(PermissionDenied(f"{rpc} is served to root on the node only (the agent's unix socket)"))
        if rule.pending:
            try:
                self.pending.hold(context, who)
            except ResourceExhausted as err:
                refuse(err)
        if not rule.needs:
            self.decided({**entry, "decision": "allow", "code": "OK",
                          "reason": "root on the node" if rule.local_only else "needs only authentication"})



def waiting_on_caller(guard: Guard, context: grpc.ServicerContext) -> None:
    """The handler is about to wait for its caller: the stream is pending from now on, until the
    guard decides on it or it ends (ResourceExhausted beyond the limits: agent/server/admission.py)."""
    guard.pending.hold(context, guard.authenticator.identify(context))  # the interceptor's answer: no review


def refused(guard: Guard, context: grpc.ServicerContext, rpc: str, err: Exception, pod: Any = None) -> None:
    """The one audit line of a call its handler refused before the guard decided on it (a malformed
    or missing first message, the caller gone): who, as the interceptor identified them, and the
    target when the request named one."""
    code, reason = status_of(err).name, (str(err) if isinstance(err, NsinspectError) else type(err).__name__)
    who = guard.authenticator.identify(context)  # the interceptor's answer for this call
    entry: dict[str, Any] = {"rpc": rpc, "peer": context.peer(), "caller": who.audit(), "decision": "deny",
                             "code": code, "reason": reason}
    if pod is not None:
        entry["target"] = audit.target(pod)
    guard.decided(entry)
