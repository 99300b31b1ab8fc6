"""A subset of Pod Security admission (k8s.io/pod-security-admission), enforced per namespace.

Checks, in the order the real evaluator reports them: baseline `non-default capabilities`,
`host namespaces`, `privileged`; restricted `allowPrivilegeEscalation != false`,
`unrestricted capabilities`, `runAsNonRoot != true`, `seccompProfile`. Containers, init containers
and ephemeral containers are all visited, so adding a debugger to a pod in a `restricted` namespace
fails the way `kubectl debug` users see it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Json = dict[str, Any]

BASELINE_CAPABILITIES = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                                   "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
LEVELS = ("privileged", "baseline", "restricted")


def _containers(spec: Json) -> Iterator[Json]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(field) or []


def _sc(container: Json) -> Json:
    return container.get("securityContext") or {}


def _who(names: list[str]) -> str:
    word = "container" if len(names) == 1 else "containers"
    return f"{word} " + ", ".join(f'"{n}"' for n in names)


def _quote_all(values: list[str]) -> str:
    return ", ".join(f'"{v}"' for v in sorted(set(values)))


def _baseline(spec: Json, capabilities: bool) -> list[str]:
    """Baseline checks; `capabilities=False` when the restricted capabilities check overrides it."""
    found = []
    bad, caps = [], []
    for c in _containers(spec) if capabilities else ():
        added = [a for a in ((_sc(c).get("capabilities") or {}).get("add") or []) if a not in BASELINE_CAPABILITIES]
        if added:
            bad.append(c["name"])
            caps += added
    if bad:
        found.append(f"non-default capabilities ({_who(bad)} must not include {_quote_all(caps)} in "
                     "securityContext.capabilities.add)")
    host = [f"{f}=true" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f)]
    if host:
        found.append(f"host namespaces ({', '.join(host)})")
    privileged = [c["name"] for c in _containers(spec) if _sc(c).get("privileged")]
    if privileged:
        found.append(f"privileged ({_who(privileged)} must not set securityContext.privileged=true)")
    return found


def _restricted(spec: Json) -> list[str]:
    found = []
    pod_sc = spec.get("securityContext") or {}
    escalating = [c["name"] for c in _containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False]
    if escalating:
        found.append(f"allowPrivilegeEscalation != false ({_who(escalating)} must set "
                     "securityContext.allowPrivilegeEscalation=false)")
    no_drop, adding, caps = [], [], []
    for c in _containers(spec):
        capabilities = _sc(c).get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            no_drop.append(c["name"])
        extra = [a for a in capabilities.get("add") or [] if a != "NET_BIND_SERVICE"]
        if extra:
            adding.append(c["name"])
            caps += extra
    details = []
    if no_drop:
        details.append(f'{_who(no_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_who(adding)} must not include {_quote_all(caps)} in securityContext.capabilities.add")
    if details:
        found.append(f"unrestricted capabilities ({'; '.join(details)})")
    found += _pod_or_container(spec, pod_sc, "runAsNonRoot", good=lambda v: v is True,
                               reason="runAsNonRoot != true", missing="must set securityContext.runAsNonRoot=true",
                               wrong="must not set securityContext.runAsNonRoot=false")
    found += _pod_or_container(
        spec, pod_sc, "seccompProfile",
        good=lambda v: isinstance(v, dict) and v.get("type") in ("RuntimeDefault", "Localhost"),
        reason="seccompProfile",
        missing='must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"',
        wrong="must not set securityContext.seccompProfile.type to a bad value")
    return found


def _pod_or_container(spec: Json, pod_sc: Json, field: str, *, good: Any, reason: str, missing: str,
                      wrong: str) -> list[str]:
    pod_value = pod_sc.get(field)
    bad_setters = ["pod"] if pod_value is not None and not good(pod_value) else []
    pod_ok = pod_value is not None and good(pod_value)
    explicit, implicit = [], []
    for c in _containers(spec):
        value = _sc(c).get(field)
        if value is not None:
            if not good(value):
                explicit.append(c["name"])
        elif not pod_ok:
            implicit.append(c["name"])
    if explicit:
        bad_setters.append(_who(explicit))
    if bad_setters:
        return [f"{reason} ({' and '.join(bad_setters)} {wrong})"]
    if implicit:
        return [f"{reason} (pod or {_who(implicit)} {missing})"]
    return []


def violations(level: str, spec: Json) -> list[str]:
    """`reason (detail)` for each failed check of `level` (privileged, baseline or restricted)."""
    if level == "privileged":
        return []
    found = _baseline(spec, capabilities=level != "restricted")
    if level == "restricted":
        found += _restricted(spec)
    return found


def forbidden_reason(level: str, spec: Json) -> str | None:
    """The admission error text (`violates PodSecurity "restricted:latest": ...`), or None if allowed."""
    found = violations(level, spec)
    return f'violates PodSecurity "{level}:latest": {", ".join(found)}' if found else None
