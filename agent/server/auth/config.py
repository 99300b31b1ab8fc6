"""The agent's access flags, and what they build: the reviewer (an API server, or none), the
guard and its interceptor, and the TLS credentials of TCP listeners (mTLS or nothing)."""

from __future__ import annotations

import argparse
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import grpc

from ..admission import Limits, Pending
from ..audit import AuditLog
from ..metrics import Metrics
from .authn import AUDIENCE, Authenticator
from .guard import Authorizer, Guard
from .interceptor import AuthInterceptor
from .review import KubeReviewer, NoApiServer, Reviewer


class ConfigError(Exception):
    """The agent's security flags or files are unusable: it refuses to start."""


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
