"""Pod defaulting and validation as the API server does it, for creation and for the
ephemeralcontainers subresource (pkg/apis/core/v1/defaults.go, pkg/apis/core/validation).

Messages follow validateEphemeralContainers and ValidatePodEphemeralContainersUpdate word for word;
only the `cmp.Diff` text after "may not be changed" is our own rendering of the difference.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from typing import Any

from testbed.cluster.status import FieldError, duplicate, forbidden, invalid, not_found, not_supported, required

Json = dict[str, Any]

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
EPHEMERAL_FORBIDDEN = "cannot be set for an Ephemeral Container"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                 "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                     "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                     "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")

# EphemeralContainerCommon's fields in declaration order, and whether an ephemeral container may set them.
EPHEMERAL_FIELDS = (
    ("name", True), ("image", True), ("command", True), ("args", True), ("workingDir", True), ("ports", False),
    ("envFrom", True), ("env", True), ("resources", False), ("resizePolicy", False), ("restartPolicy", False),
    ("volumeMounts", True), ("volumeDevices", True), ("livenessProbe", False), ("readinessProbe", False),
    ("startupProbe", False), ("lifecycle", False), ("terminationMessagePath", True),
    ("terminationMessagePolicy", True), ("imagePullPolicy", True), ("securityContext", True), ("stdin", True),
    ("stdinOnce", True), ("tty", True),
)


def _is_set(value: Any) -> bool:
    """Go's 'not the zero value' for what JSON can carry; empty `resources: {}` counts as unset,
    because that is what kubectl debug sends and the real server accepts."""
    if isinstance(value, dict):
        return any(_is_set(v) for v in value.values())
    return value not in (None, "", 0, False, [])


def _image_pull_policy(image: str) -> str:
    name = image.rsplit("/", 1)[-1]
    if "@" in name:
        return "IfNotPresent"
    tag = name.split(":", 1)[1] if ":" in name else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def default_container(container: Json) -> Json:
    c = copy.deepcopy(container)
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    if c.get("image"):
        c.setdefault("imagePullPolicy", _image_pull_policy(c["image"]))
    c.setdefault("resources", {})
    return c


def default_pod(pod: Json, namespace: str, now: str) -> Json:
    """What the server fills in on create: identity, timestamps, spec defaults, a Pending status."""
    p = copy.deepcopy(pod)
    p["apiVersion"], p["kind"] = "v1", "Pod"
    meta = p.setdefault("metadata", {})
    if not meta.get("name") and meta.get("generateName"):
        meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
    meta["namespace"] = namespace
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now
    for drop in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
        meta.pop(drop, None)
    spec = p.setdefault("spec", {})
    for key, value in (("restartPolicy", "Always"), ("dnsPolicy", "ClusterFirst"), ("securityContext", {}),
                       ("schedulerName", "default-scheduler"), ("terminationGracePeriodSeconds", 30),
                       ("serviceAccountName", "default"), ("serviceAccount", "default"),
                       ("enableServiceLinks", True), ("preemptionPolicy", "PreemptLowerPriority"), ("priority", 0)):
        spec.setdefault(key, value)
    spec.setdefault("tolerations", [
        {"key": f"node.kubernetes.io/{t}", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        for t in ("not-ready", "unreachable")])
    for field in ("containers", "initContainers"):
        if field in spec:
            spec[field] = [default_container(c) for c in spec[field] or []]
    if spec.get("ephemeralContainers"):
        spec["ephemeralContainers"] = [default_container(c) for c in spec["ephemeralContainers"]]
    p["status"] = {"phase": "Pending", "qosClass": _qos(spec)}
    return p


def _qos(spec: Json) -> str:
    resources = [c.get("resources") or {} for c in spec.get("containers") or []]
    return "BestEffort" if not any(_is_set(r) for r in resources) else "Burstable"


def _container_common(c: Json, path: str) -> list[FieldError]:
    errors = []
    name = c.get("name") or ""
    if not name:
        errors.append(required(f"{path}.name"))
    elif not _DNS_LABEL.match(name) or len(name) > 63:
        errors.append(invalid(f"{path}.name", name, DNS_LABEL_MSG))
    if not c.get("image"):
        errors.append(required(f"{path}.image"))
    policy = c.get("terminationMessagePolicy") or ""
    if not policy:
        errors.append(required(f"{path}.terminationMessagePolicy"))
    elif policy not in ("File", "FallbackToLogsOnError"):
        errors.append(not_supported(f"{path}.terminationMessagePolicy", policy, ["File", "FallbackToLogsOnError"]))
    pull = c.get("imagePullPolicy") or ""
    if not pull:
        errors.append(required(f"{path}.imagePullPolicy"))
    elif pull not in ("Always", "IfNotPresent", "Never"):
        errors.append(not_supported(f"{path}.imagePullPolicy", pull, ["Always", "IfNotPresent", "Never"]))
    return errors


def validate_pod(pod: Json) -> list[FieldError]:
    """Create-time validation: name, containers, and the ephemeral containers if any."""
    errors = []
    name = pod["metadata"].get("name") or ""
    if not name:
        errors.append(required("metadata.name", "name or generateName is required"))
    elif not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
        errors.append(invalid("metadata.name", name, DNS_SUBDOMAIN_MSG))
    spec = pod.get("spec") or {}
    if not spec.get("containers"):
        errors.append(required("spec.containers"))
    seen: set[str] = set()
    for field in ("containers", "initContainers"):
        for i, c in enumerate(spec.get(field) or []):
            path = f"spec.{field}[{i}]"
            errors += _container_common(c, path)
            if c.get("name") in seen:
                errors.append(duplicate(f"{path}.name", c["name"]))
            seen.add(c.get("name") or "")
    errors += validate_ephemeral(spec)
    return errors


def validate_ephemeral(spec: Json) -> list[FieldError]:
    """validateEphemeralContainers: common checks, unique names, existing target, allowed fields."""
    errors: list[FieldError] = []
    others = {c.get("name") for f in ("containers", "initContainers") for c in spec.get(f) or []}
    names = set(others)
    for i, ec in enumerate(spec.get("ephemeralContainers") or []):
        path = f"spec.ephemeralContainers[{i}]"
        errors += _container_common(ec, path)
        if ec.get("name") in names:
            errors.append(duplicate(f"{path}.name", ec["name"]))
        else:
            names.add(ec.get("name"))
        target = ec.get("targetContainerName") or ""
        if target and target not in others:
            errors.append(not_found(f"{path}.targetContainerName", target))
        for field, allowed in EPHEMERAL_FIELDS:
            if not allowed and _is_set(ec.get(field)):
                errors.append(forbidden(f"{path}.{field}", EPHEMERAL_FORBIDDEN))
        for j, mount in enumerate(ec.get("volumeMounts") or []):
            for sub in ("subPath", "subPathExpr"):
                if mount.get(sub):
                    errors.append(forbidden(f"{path}.volumeMounts[{j}].{sub}", EPHEMERAL_FORBIDDEN))
    return errors


def _diff(old: Json, new: Json) -> str:
    """A readable stand-in for cmp.Diff(old, new): one -/+ line per differing field."""
    lines = ["  core.EphemeralContainer{"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            if key in old:
                lines.append(f"- \t{key}: {json.dumps(old[key], sort_keys=True)},")
            if key in new:
                lines.append(f"+ \t{key}: {json.dumps(new[key], sort_keys=True)},")
    lines.append("  }")
    return "\n".join(lines) + "\n"


def validate_ephemeral_update(new: Json, old: Json) -> list[FieldError]:
    """ValidatePodEphemeralContainersUpdate for a pod whose only change is spec.ephemeralContainers."""
    errors = validate_ephemeral(new["spec"])
    if MIRROR_ANNOTATION in (old["metadata"].get("annotations") or {}):
        return [forbidden("", "static pods do not support ephemeral containers")]
    current = {c.get("name"): c for c in new["spec"].get("ephemeralContainers") or []}
    for previous in old["spec"].get("ephemeralContainers") or []:
        name = previous["name"]
        if name not in current:
            errors.append(forbidden("spec.ephemeralContainers", f'existing ephemeral containers "{name}" may not be '
                                                                "removed\n"))
        elif current[name] != previous:
            errors.append(forbidden("spec.ephemeralContainers", f'existing ephemeral containers "{name}" may not be '
                                                                f"changed\n{_diff(previous, current[name])}"))
    return errors
