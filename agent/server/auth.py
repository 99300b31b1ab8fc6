"""Who is calling the agent, and may they do this: delegated authentication and authorization.

The agent is root on the node, so it trusts nobody by default, as the kubelet does:
- identity: a peer on the unix socket is root on the node (the socket is 0600 root); else a
  bearer token (`authorization: Bearer ...`), verified with a TokenReview for audience `nsinspect`;
  else a client certificate (mTLS listeners): CN is the user, each O a group.
- permission: a SubjectAccessReview on the target for that user, its uid, groups and extra, with
  the verbs of POLICY, the one table of which RPC needs what.
`AuthInterceptor` authenticates every call but Health/Check (and turns undecodable requests into
INVALID_ARGUMENT), and refuses pending streams beyond their limits (agent/server/admission.py); each handler
asks its `Guard` about its target before touching anything. Both cache briefly, fail closed when
the API server cannot answer, and write one audit line per call.
Tokens are never logged, never cached as such (an HMAC of each under a per-process key), and
scrubbed from any message the API server returns.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, NoReturn, TypeVar

import grpc

from nsinspect.proto import exec_pb2

from ..core.errors import InvalidArgument, NsinspectError, PermissionDenied, ResourceExhausted, Unauthenticated
from ..core.model import PodRef
from .admission import Limits, Pending
from .audit import AuditLog
from .audit import target as audit_target
from .handlers import Behavior, rewrap
from .metrics import Metrics
from .status import status_of

log = logging.getLogger(__name__)
AUDIENCE = "nsinspect"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"  # the probes' one call; Watch would hold a worker: refused
MAX_TOKEN = 16 * 1024


# -- the policy -----------------------------------------------------------------------------------
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


# -- identities and decisions ---------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    user: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    via: str = "token"  # "token", "x509", "unix"

    def audit(self) -> dict[str, Any]:
        return {"user": self.user, "uid": self.uid, "groups": list(self.groups), "via": self.via}


LOCAL_ROOT = Identity("system:node:local-root", via="unix")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


class AuthUnavailable(NsinspectError):
    """The API server could not answer: fail closed."""

    status = grpc.StatusCode.UNAVAILABLE


class ConfigError(Exception):
    """The agent's security flags or files are unusable: it refuses to start."""


# -- reviews against the API server ---------------------------------------------------------------
class KubeReviewer:
    """TokenReview and SubjectAccessReview through the kubernetes client (the agent's own
    credentials: its ServiceAccount in a pod, else --kubeconfig)."""

    def __init__(self, api: Any, timeout: float) -> None:
        from kubernetes import client  # noqa: PLC0415 - slow to import; only agents with an API server

        self.models = client
        self.authn = client.AuthenticationV1Api(api)
        self.authz = client.AuthorizationV1Api(api)
        self.timeout = timeout
        self.host = str(api.configuration.host)

    def token_review(self, token: str, audience: str) -> Identity:
        body = self.models.V1TokenReview(spec=self.models.V1TokenReviewSpec(token=token, audiences=[audience]))
        status = self._post("the bearer token", lambda: self.authn.create_token_review(
            body, _request_timeout=self.timeout).status, token)
        user = status.user
        if not status.authenticated or user is None or not user.username:
            why = _scrub(str(status.error or "not authenticated"), token)
            raise Unauthenticated(f"the API server did not accept the bearer token for audience {audience!r}: {why}")
        if audience not in (status.audiences or []):  # an audience-unaware reviewer: do not trust it
            raise Unauthenticated(f"the API server did not confirm the bearer token's audience {audience!r}")
        return Identity(str(user.username), str(user.uid or ""), tuple(user.groups or ()),
                        tuple(sorted((str(k), tuple(v or ())) for k, v in (user.extra or {}).items())))

    def access_review(self, who: Identity, permission: Permission, namespace: str, name: str) -> Decision:
        m = self.models
        attrs = m.V1ResourceAttributes(verb=permission.verb, group="", version="v1", resource=permission.resource,
                                       subresource=permission.subresource or None, namespace=namespace or None,
                                       name=name or None)
        body = m.V1SubjectAccessReview(spec=m.V1SubjectAccessReviewSpec(
            user=who.user, uid=who.uid or None, groups=list(who.groups),
            extra={k: list(v) for k, v in who.extra} or None, resource_attributes=attrs))
        status = self._post("permission", lambda: self.authz.create_subject_access_review(
            body, _request_timeout=self.timeout).status)
        reason = "; ".join(str(r) for r in (status.reason, status.evaluation_error) if r)
        return Decision(bool(status.allowed) and not status.denied, reason)

    def _post(self, what: str, call: Callable[[], Any], secret: str = "") -> Any:
        """The review's status; UNAVAILABLE (fail closed) when the API server cannot answer."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        try:
            return call()
        except ApiException as err:
            log.error("the API server refused a review", extra={"what": what, "status": err.status,
                                                               "reason": _scrub(str(err.reason), secret)})
            raise AuthUnavailable(f"cannot verify {what}: the API server refused the agent's review "
                                  f"(HTTP {err.status}; the agent needs system:auth-delegator)") from None
        except Exception as err:  # urllib3, TLS, timeouts: never assume
            log.error("the API server did not answer", extra={"what": what, "api_server": self.host,
                                                             "error": _scrub(str(err), secret)})
            raise AuthUnavailable(f"cannot verify {what}: the API server did not answer "
                                  "(the agent's log has the details)") from None


class NoApiServer:
    """An agent started without --kubeconfig outside a pod: only unix-socket callers (root) are served."""

    host = ""
    WHY = "this agent has no API server to ask (start it with --kubeconfig FILE, or run it in a pod)"

    def token_review(self, token: str, audience: str) -> Identity:
        raise Unauthenticated(f"cannot verify bearer tokens: {self.WHY}; use its unix socket as root")

    def access_review(self, who: Identity, permission: Permission, namespace: str, name: str) -> Decision:
        raise AuthUnavailable(f"cannot verify permission: {self.WHY}")


Reviewer = KubeReviewer | NoApiServer


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "[token]") if secret else text


# -- caches ------------------------------------------------------------------------------------------
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A bounded LRU whose entries expire `ttl` seconds after they were put (ttl 0: no caching)."""

    def __init__(self, ttl: float, size: int = 4096) -> None:
        self.ttl, self.size = ttl, size
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            if hit[0] <= time.monotonic():
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


# -- authentication -----------------------------------------------------------------------------------
NO_CREDENTIALS = ("no credentials: send a bearer token (the CLI sends your kubeconfig's, or --token), a client "
                  "certificate the agent trusts (mTLS), or use the agent's unix socket as root on the node")


class Authenticator:
    def __init__(self, reviewer: Reviewer, audience: str = AUDIENCE, ttl: float = 10.0) -> None:
        self.reviewer, self.audience = reviewer, audience
        self._key = secrets.token_bytes(32)  # cache keys are HMACs: no token is kept, not even hashed plainly
        self._cache: TtlCache[bytes, Identity | str] = TtlCache(ttl)
        self._call = threading.local()  # the identity of the call this thread serves (interceptor -> guard)

    def identify(self, context: grpc.ServicerContext) -> Identity:
        """The caller, or Unauthenticated / AuthUnavailable. Once per call: the interceptor asks
        first, and the handler's Guard gets the same answer without another review."""
        memo = getattr(self._call, "memo", None)
        if memo is not None and memo[0] is context:
            return memo[1]  # type: ignore[no-any-return]
        identity = self._identify(context)
        self._call.memo = (context, identity)
        return identity

    def forget(self) -> None:
        self._call.memo = None

    def _identify(self, context: grpc.ServicerContext) -> Identity:
        if context.peer().startswith("unix:"):
            return LOCAL_ROOT
        token = bearer_token(context.invocation_metadata() or ())
        if token:
            return self._token(token)
        cert = certificate_identity(context.auth_context())
        if cert is not None:
            return cert
        raise Unauthenticated(NO_CREDENTIALS)

    def _token(self, token: str) -> Identity:
        key = hmac.new(self._key, token.encode(), hashlib.sha256).digest()
        hit = self._cache.get(key)
        if isinstance(hit, Identity):
            return hit
        if hit is not None:
            raise Unauthenticated(hit)
        try:
            identity = self.reviewer.token_review(token, self.audience)
        except Unauthenticated as err:
            self._cache.put(key, str(err))
            raise
        except NsinspectError:
            raise
        except Exception as err:  # an answer we cannot read: fail closed
            log.error("unreadable TokenReview answer", extra={"error": _scrub(str(err), token)})
            raise AuthUnavailable("cannot verify the bearer token: the API server's answer was unreadable") from None
        self._cache.put(key, identity)
        return identity


def bearer_token(metadata: Sequence[Any]) -> str:
    """The token of `authorization: Bearer TOKEN`; "" when there is no such metadata."""
    values = [str(m[1]) for m in metadata if str(m[0]).lower() == "authorization"]
    if not values:
        return ""
    scheme, _, token = values[0].partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer" or not token or " " in token or len(token) > MAX_TOKEN:
        raise Unauthenticated("malformed authorization metadata: expected exactly one `Bearer TOKEN`")
    return token


_ATTRIBUTE = re.compile(r"((?:[^,+\\]|\\.)*)([,+]|$)")
_ESCAPE = re.compile(rb"\\([0-9A-Fa-f]{2}|.)")


def _subject(rfc2253: bytes) -> Iterator[tuple[str, str]]:
    """(type, value) of each attribute of an RFC 2253 subject, as OpenSSL prints it for gRPC."""
    for match in _ATTRIBUTE.finditer(rfc2253.decode("latin-1")):
        kind, _, value = match.group(1).partition("=")
        raw = _ESCAPE.sub(lambda m: bytes.fromhex(m.group(1).decode()) if len(m.group(1)) == 2 else m.group(1),
                          value.encode("latin-1"))  # as printed: spaces are escaped, and part of the name
        yield kind.strip().upper(), raw.decode("utf-8", "replace")
        if not match.group(2):
            return


def certificate_identity(auth_context: Mapping[str, Any]) -> Identity | None:
    """CN as the user and every O as a group, from the client certificate gRPC verified (mTLS)."""
    if auth_context.get("transport_security_type") != [b"ssl"]:
        return None
    subjects = auth_context.get("x509_subject") or []
    names: list[str] = []
    groups: list[str] = []
    if subjects:  # RFC 2253 lists the attributes last first: reversed, they are in the certificate's order
        for kind, value in reversed(list(_subject(bytes(subjects[0])))):
            if kind == "CN":
                names.append(value)
            elif kind == "O":
                groups.append(value)
    else:
        names = [bytes(v).decode("utf-8", "replace") for v in auth_context.get("x509_common_name") or []]
    if len(names) > 1:  # Go's x509 takes the last, OpenSSL's tools the first: trust neither
        raise Unauthenticated("the client certificate has more than one common name (CN)")
    if not names or not names[0]:
        raise Unauthenticated("the client certificate has no common name (CN) to use as the user")
    return Identity(names[0], groups=(*groups, "system:authenticated"), via="x509")


# -- authorization ------------------------------------------------------------------------------------
class Authorizer:
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
        target = Target(ref.namespace, ref.name, where, audit_target(ref))
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
            entry["target"] = audit_target(pod)

        def refuse(err: NsinspectError) -> NoReturn:
            self.decided({**entry, "decision": "deny", "code": status_of(err).name, "reason": str(err)})
            _abort(context, err)

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


def _abort(context: grpc.ServicerContext, err: NsinspectError) -> NoReturn:
    context.abort(status_of(err), str(err))


# -- the interceptor ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Malformed:
    """A request that did not decode: the handler answers INVALID_ARGUMENT instead of gRPC's INTERNAL."""

    error: str


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def load(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as err:
            return Malformed(str(err)[:200] or type(err).__name__)

    return load


def _checked(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, Malformed):
            raise InvalidArgument(f"malformed request message: {request.error}")
        yield request


class AuthInterceptor(grpc.ServerInterceptor):
    """Authenticates every RPC but grpc.health.v1 Check before its handler runs (see Guard.admit)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        open_call = method == HEALTH_CHECK
        guard = self.guard

        def before(request: Any, context: grpc.ServicerContext) -> None:
            guard.authenticator.forget()  # a new call on this thread
            if not open_call:
                guard.admit(context, method, request)
            if isinstance(request, Malformed):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request message: {request.error}")

        def wrap(inner: Behavior, kind: str) -> Behavior:
            streaming_in = kind.startswith("stream")

            def behavior(request: Any, context: grpc.ServicerContext) -> Any:
                before(None if streaming_in else request, context)
                return inner(_checked(request) if streaming_in else request, context)

            return behavior

        return rewrap(handler, wrap, _tolerant(handler.request_deserializer))


# -- configuration ---------------------------------------------------------------------------------------
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """Seconds from "10s", "250ms", "2m", "1h" or a plain number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(ms|s|m|h)?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: e.g. 10s, 250ms, 2m")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def add_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("access (callers are authenticated and authorized through the Kubernetes API)")
    g.add_argument("--kubeconfig", metavar="FILE", default=None,
                   help="the API server for TokenReview and SubjectAccessReview (default: in a pod, its service "
                        "account; else none, and only unix-socket callers, who are root, are served)")
    g.add_argument("--audience", default=AUDIENCE, help=f"the audience tokens must have (default {AUDIENCE})")
    g.add_argument("--authn-cache-ttl", type=duration, default=10.0, metavar="DURATION",
                   help="how long a verified token is trusted (default 10s; 0: ask every time)")
    g.add_argument("--authz-cache-ttl", type=duration, default=10.0, metavar="DURATION",
                   help="how long a permission decision is kept (default 10s; 0: ask every time)")
    g.add_argument("--api-timeout", type=duration, default=5.0, metavar="DURATION",
                   help="how long to wait for the API server's reviews (default 5s)")
    g.add_argument("--tls-cert", metavar="FILE", help="serve TCP with TLS: the agent's certificate (PEM)")
    g.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    g.add_argument("--tls-client-ca", metavar="FILE",
                   help="CA bundle client certificates must chain to (mTLS: TCP callers must present one)")


@dataclass
class Security:
    guard: Guard
    interceptor: AuthInterceptor
    tls: grpc.ServerCredentials | None = None
    api_server: str = ""

    @classmethod
    def from_args(cls, args: argparse.Namespace, audit: AuditLog, metrics: Metrics | None = None) -> Security:
        reviewer = reviewer_from(args.kubeconfig, args.api_timeout)
        guard = Guard(Authenticator(reviewer, args.audience, args.authn_cache_ttl),
                      Authorizer(reviewer, args.authz_cache_ttl), audit, args.node_name, metrics,
                      pending=Pending(Limits.from_args(args)))
        return cls(guard, AuthInterceptor(guard), server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca),
                   reviewer.host)


def reviewer_from(kubeconfig: str | None, timeout: float) -> Reviewer:
    """--kubeconfig, else the pod's service account (in-cluster), else none."""
    if not kubeconfig and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return NoApiServer()
    from kubernetes import client, config  # noqa: PLC0415

    logging.getLogger("kubernetes").setLevel(logging.WARNING)  # its debug lines dump review bodies: tokens
    configuration = client.Configuration()
    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration,  # type: ignore[no-untyped-call]
                                    persist_config=False)
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError, ValueError) as err:
        raise ConfigError(f"cannot load the API server's configuration ({kubeconfig or 'in-cluster'}): {err}") from None
    configuration.retries = 1
    return KubeReviewer(client.ApiClient(configuration), timeout)


def server_credentials(cert: str | None, key: str | None, client_ca: str | None) -> grpc.ServerCredentials | None:
    given = [f for f in (cert, key, client_ca) if f]
    if not given:
        return None
    if len(given) != 3:
        raise ConfigError("TLS needs all of --tls-cert, --tls-key and --tls-client-ca (clients must present "
                          "certificates: mTLS)")
    try:
        pem = [Path(path).read_bytes() for path in given]
    except OSError as err:
        raise ConfigError(f"cannot read a TLS file: {err}") from None
    return grpc.ssl_server_credentials([(pem[1], pem[0])], root_certificates=pem[2], require_client_auth=True)
