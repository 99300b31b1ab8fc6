"""Reach an agent with the caller's credentials, and turn its gRPC failures into one-line messages.

The agent authenticates every call but health (agent/server/auth.py): over its unix socket the caller is
root on the node; over TCP the CLI sends a bearer token (--token, else the kubeconfig user's) and,
for agents that serve mTLS, a client certificate (--tls-cert/--tls-key, server checked with --tls-ca).
A token goes only over TLS or to a local address (unix socket, loopback, the port-forward relay):
gRPC's local credentials refuse to send it anywhere else.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from nsinspect.proto.rpcerror import rpc_status

from .errors import CliError

if TYPE_CHECKING:
    from .kube import Kube


@dataclass(frozen=True)
class Credentials:
    """What the CLI shows an agent. Never printed: a token must not end up in a message."""

    token: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    def __repr__(self) -> str:
        return f"Credentials(token={'***' if self.token else ''!r}, tls_cert={self.tls_cert!r})"


def credentials(token: str = "", tls_ca: str = "", tls_cert: str = "", tls_key: str = "", *,
                kube: Kube | None = None) -> Credentials:
    """--token (or $NSINSPECT_TOKEN), else through Kubernetes the kubeconfig user's bearer token
    (static, token file, exec plugin or auth provider); plus the TLS files. Through Kubernetes,
    a kubeconfig with no token and no --tls-cert is an error that says what to do."""
    if bool(tls_cert) != bool(tls_key):
        raise CliError("--tls-cert and --tls-key go together")
    if not token and kube is not None:
        from . import kube as kubemod  # noqa: PLC0415 - the kubernetes client is slow to import

        token, why = kubemod.user_token(kube)
        if not token and not tls_cert:
            raise CliError(
                f"the nsinspect agent needs a bearer token, and the kubeconfig user has none ({why}). Pass one "
                "with --token TOKEN (or $NSINSPECT_TOKEN), e.g. a service account's: --token \"$(kubectl create "
                "token NAME -n NAMESPACE --audience nsinspect)\", or an OIDC token your API server accepts for "
                "audience nsinspect; or use mTLS with --tls-cert/--tls-key (and --tls-ca) against an agent "
                "that serves TLS")
    return Credentials(token.strip(), tls_ca, tls_cert, tls_key)


def grpc_target(address: str) -> str:
    """unix:///path, tcp://host:port or host:port, as grpc wants it."""
    if address.startswith("unix://"):
        return address
    if address.startswith("/"):
        return f"unix://{address}"
    return address.removeprefix("tcp://")


def _local(where: str) -> bool:
    if where.startswith("unix:"):
        return True
    host = where.rsplit(":", 1)[0].strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_tls_file(path: str, flag: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise CliError(f"cannot read {flag} {path}: {err.strerror or err}") from None


def open_channel(address: str, creds: Credentials) -> grpc.Channel:
    """A channel to the agent at `address` that presents `creds`."""
    where = grpc_target(address)
    call_creds = grpc.access_token_call_credentials(creds.token) if creds.token else None
    if creds.tls_ca or creds.tls_cert:
        tls = grpc.ssl_channel_credentials(_read_tls_file(creds.tls_ca, "--tls-ca"),
                                           _read_tls_file(creds.tls_key, "--tls-key"),
                                           _read_tls_file(creds.tls_cert, "--tls-cert"))
        return grpc.secure_channel(where, grpc.composite_channel_credentials(tls, call_creds) if call_creds else tls)
    if call_creds is None:
        return grpc.insecure_channel(where)
    if not _local(where):
        raise CliError(f"refusing to send a bearer token in clear text to {address}: reach the agent through "
                       "Kubernetes (port-forward), or over TLS (--tls-ca, --tls-cert, --tls-key)")
    kind = grpc.LocalConnectionType.UDS if where.startswith("unix:") else grpc.LocalConnectionType.LOCAL_TCP
    return grpc.secure_channel(where, grpc.composite_channel_credentials(grpc.local_channel_credentials(kind),
                                                                         call_creds))


def explain(err: grpc.RpcError, address: str) -> CliError:
    """A failed call as one line: what it means for reaching the agent at `address`, else its details."""
    code, details = rpc_status(err)
    if code == grpc.StatusCode.UNAVAILABLE and "handshake" in details.lower():
        return CliError(f"no TLS connection to the agent at {address} (check --tls-ca, --tls-cert and --tls-key): "
                        f"{details}")
    if code == grpc.StatusCode.UNAVAILABLE and ("connect" in details.lower() or "socket" in details.lower()):
        return CliError(f"cannot reach the agent at {address}: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CliError(f"the agent at {address} did not answer in time")
    if code is None:
        return CliError(details)
    return CliError(f"{details} ({code.name})")
