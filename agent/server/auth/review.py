"""Reviews against the API server: TokenReview (who a bearer token is) and SubjectAccessReview
(may they), their answers (`Identity`, `Decision`), and the TTL cache the authenticator and the
authorizer keep them in. The API server not answering is `AuthUnavailable`: fail closed."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from ...core.errors import NsinspectError, Unauthenticated
from .policy import Permission

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """Who the caller is, as a TokenReview, a certificate or the unix socket says: whom access reviews are about."""

    user: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    via: str = "token"  # "token", "x509", "unix"

    def audit(self) -> dict[str, Any]:
        return {"user": self.user, "uid": self.uid, "groups": list(self.groups), "via": self.via}


@dataclass(frozen=True)
class Decision:
    """A SubjectAccessReview's answer."""

    allowed: bool
    reason: str = ""


class AuthUnavailable(NsinspectError):
    """The API server could not answer: fail closed."""

    status = grpc.StatusCode.UNAVAILABLE



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
            why = scrub(str(status.error or "not authenticated"), token)
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
                                                               "reason": scrub(str(err.reason), secret)})
            raise AuthUnavailable(f"cannot verify {what}: the API server refused the agent's review "
                                  f"(HTTP {err.status}; the agent needs system:auth-delegator)") from None
        except Exception as err:  # urllib3, TLS, timeouts: never assume
            log.error("the API server did not answer", extra={"what": what, "api_server": self.host,
                                                             "error": scrub(str(err), secret)})
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


def scrub(text: str, secret: str) -> str:
    """`text` without `secret` (a token) in it: for messages the API server or a client library returns."""
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

