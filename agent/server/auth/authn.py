"""Who is calling: root on the node over the unix socket, else a bearer token (a TokenReview for
the audience `nsinspect`), else a client certificate (CN the user, each O a group). Tokens are
cached only as HMACs under a per-process key, and never logged."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc

from ...core.errors import NsinspectError, Unauthenticated
from .review import AuthUnavailable, Identity, Reviewer, TtlCache, scrub

log = logging.getLogger(__name__)
AUDIENCE = "nsinspect"
MAX_TOKEN = 16 * 1024
LOCAL_ROOT = Identity("system:node:local-root", via="unix")

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
            log.error("unreadable TokenReview answer", extra={"error": scrub(str(err), token)})
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

