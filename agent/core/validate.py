"""Check what callers send before it reaches the runtime, /proc or a path: Kubernetes' own name rules."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .errors import InvalidArgument
from .model import NS_TYPES, PodRef

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_UID = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_]{0,127}")


def _show(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:77] + "...")


def dns_label(value: str, what: str) -> str:
    if len(value) > 63 or not _LABEL.fullmatch(value):
        raise InvalidArgument(f"invalid {what} {_show(value)}: must be a DNS-1123 label "
                              "(at most 63 lowercase letters, digits and '-')")
    return value


def dns_subdomain(value: str, what: str) -> str:
    if len(value) > 253 or not _SUBDOMAIN.fullmatch(value):
        raise InvalidArgument(f"invalid {what} {_show(value)}: must be a DNS-1123 subdomain "
                              "(at most 253 lowercase letters, digits, '-' and '.')")
    return value


def pod_ref(namespace: str, name: str, uid: str) -> PodRef:
    """A valid reference; a namespace given with a UID must hold that pod (checked on resolution)."""
    if not name and not uid:
        raise InvalidArgument("a pod name or UID is required")
    if namespace or name:
        dns_label(namespace or "default", "namespace")
    if name:
        dns_subdomain(name, "pod name")
    if uid and not _UID.fullmatch(uid):
        raise InvalidArgument(f"invalid pod UID {_show(uid)}")
    return PodRef(namespace=(namespace or "default") if name else namespace, name=name, uid=uid)


def container_name(name: str) -> str:
    return dns_label(name, "container name") if name else ""


def target_container_names(targets: Mapping[str, str]) -> dict[str, str]:
    if len(targets) > 256:
        raise InvalidArgument("too many targetContainerName entries")
    return {dns_label(k, "container name"): dns_label(v, "targetContainerName") for k, v in targets.items()}


def ns_types(types: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(types)
    unknown = [t for t in chosen if t not in NS_TYPES]
    if unknown:
        raise InvalidArgument(f"unknown namespace type {_show(unknown[0])}: expected one of {', '.join(NS_TYPES)}")
    return chosen or NS_TYPES
