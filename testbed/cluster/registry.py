"""Pod writes with the API server's rules, independent of HTTP: create (defaulting, validation,
Pod Security admission, a trivial scheduler), update and patch (metadata only), the `status`
and `ephemeralcontainers` subresources, and graceful deletion that the node's kubelet finishes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from testbed.cluster import patch as patching
from testbed.cluster import podsecurity
from testbed.cluster.podspec import default_container, default_pod, validate_ephemeral_update, validate_pod
from testbed.cluster.status import (
    ApiError,
    bad_request,
    conflict,
    forbidden,
    forbidden_error,
    invalid_error,
    path_not_found,
)
from testbed.cluster.store import Store

Json = dict[str, Any]
UNMANAGED = "cluster.nsinspect.test/unmanaged"  # pods no kubelet runs (a locally started agent)
UPDATABLE = ("spec.containers[*].image,spec.initContainers[*].image,spec.activeDeadlineSeconds,"
             "spec.tolerations (only additions to existing tolerations),"
             "spec.terminationGracePeriodSeconds (allow it to be set to 1 if it was previously negative)")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Behaviours:
    """Cluster-wide switches tests flip to reproduce what users meet on real clusters."""

    ephemeral_containers: bool = True  # False: the subresource is not served (feature gate off)
    pod_security: dict[str, str] = field(default_factory=dict)  # namespace -> enforced level
    default_node: str | None = "lab-node"  # where pods without spec.nodeName are bound ("the scheduler")


class PodRegistry:
    def __init__(self, store: Store, behaviours: Behaviours, graceful: Callable[[str], bool]) -> None:
        self.store = store
        self.behaviours = behaviours
        self._graceful = graceful  # does the node run a kubelet that finishes graceful deletions?

    def _admit(self, pod: Json) -> None:
        level = self.behaviours.pod_security.get(pod["metadata"]["namespace"], "privileged")
        why = podsecurity.forbidden_reason(level, pod.get("spec") or {})
        if why:
            raise forbidden_error("pods", pod["metadata"]["name"], why)

    def create(self, namespace: str, body: Json) -> Json:
        meta = body.get("metadata") or {}
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        pod = default_pod(body, namespace, now())
        errors = validate_pod(pod)
        if errors:
            raise invalid_error("Pod", pod["metadata"].get("name") or "", errors)
        self._admit(pod)
        if not pod["spec"].get("nodeName") and self.behaviours.default_node:
            pod["spec"]["nodeName"] = self.behaviours.default_node
        if pod["spec"].get("nodeName"):
            pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                            "lastTransitionTime": now()}]
        self.ensure_namespace(namespace)
        return self.store.create("pods", pod)

    def ensure_namespace(self, name: str) -> None:
        """Namespaces come into being with their first pod (a real server wants them created first)."""
        if self.store.get("namespaces", "", name) is None:
            with contextlib.suppress(ApiError):
                self.store.create("namespaces", {
                    "kind": "Namespace", "apiVersion": "v1",
                    "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now(),
                                 "labels": {"kubernetes.io/metadata.name": name}},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})

    # -- main resource: metadata changes only ---------------------------------------------
    def _update_metadata(self, current: Json, new: Json) -> Json:
        if json.dumps(new.get("spec"), sort_keys=True) != json.dumps(current.get("spec"), sort_keys=True):
            raise invalid_error("Pod", current["metadata"]["name"], [forbidden(
                "spec", f"pod updates may not change fields other than {UPDATABLE}")])
        result = copy.deepcopy(current)
        for key in ("labels", "annotations", "ownerReferences", "finalizers"):
            if new["metadata"].get(key) is not None:
                result["metadata"][key] = new["metadata"][key]
            else:
                result["metadata"].pop(key, None)
        return result

    def _check_identity(self, name: str, new: Json) -> None:
        if (new.get("metadata") or {}).get("name", name) != name:
            raise bad_request(f"the name of the object ({new['metadata']['name']}) does not match the name on "
                              f"the URL ({name})")

    def update(self, namespace: str, name: str, body: Json) -> Json:
        self._check_identity(name, body)
        return self.store.update("pods", namespace, name, lambda cur: self._update_metadata(cur, body),
                                 expect_rv=(body.get("metadata") or {}).get("resourceVersion"))

    def _patched(self, current: Json, name: str, content_type: str, raw: bytes) -> Json:
        """The patch applied to the latest object (under the store's lock, so concurrent writers
        never conflict); a patch that sets metadata.resourceVersion must name the latest one."""
        new = patching.apply(content_type, current, raw)
        if (new.get("metadata") or {}).get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise conflict("pods", name)
        self._check_identity(name, new)
        return new

    def patch(self, namespace: str, name: str, content_type: str, raw: bytes) -> Json:
        return self.store.update("pods", namespace, name, lambda cur: self._update_metadata(
            cur, self._patched(cur, name, content_type, raw)))

    # -- status -----------------------------------------------------------------------------
    def update_status(self, namespace: str, name: str, body: Json) -> Json:
        def change(cur: Json) -> Json:
            cur["status"] = copy.deepcopy(body.get("status") or {})
            return cur
        return self.store.update("pods", namespace, name, change,
                                 expect_rv=(body.get("metadata") or {}).get("resourceVersion"))

    def patch_status(self, namespace: str, name: str, content_type: str, raw: bytes) -> Json:
        return self.store.update("pods", namespace, name, lambda cur: {
            **cur, "status": self._patched(cur, name, content_type, raw).get("status") or {}})

    # -- ephemeral containers ---------------------------------------------------------------
    def ephemeral_get(self, namespace: str, name: str) -> Json:
        if not self.behaviours.ephemeral_containers:
            raise path_not_found()
        return self.store.must_get("pods", namespace, name)

    def _ephemeral_apply(self, current: Json, new: Json) -> Json:
        """dropNonEphemeralContainerUpdates, defaulting, ValidatePodEphemeralContainersUpdate, admission."""
        pod = copy.deepcopy(current)
        pod["spec"]["ephemeralContainers"] = [default_container(c) for c in
                                              (new.get("spec") or {}).get("ephemeralContainers") or []]
        if not pod["spec"]["ephemeralContainers"]:
            del pod["spec"]["ephemeralContainers"]
        errors = validate_ephemeral_update(pod, current)
        if errors:
            raise invalid_error("Pod", current["metadata"]["name"], errors)
        self._admit(pod)
        return pod

    def ephemeral_put(self, namespace: str, name: str, body: Json) -> Json:
        if not self.behaviours.ephemeral_containers:
            raise path_not_found()
        self._check_identity(name, body)
        return self.store.update("pods", namespace, name, lambda cur: self._ephemeral_apply(cur, body),
                                 expect_rv=(body.get("metadata") or {}).get("resourceVersion"))

    def ephemeral_patch(self, namespace: str, name: str, content_type: str, raw: bytes) -> Json:
        if not self.behaviours.ephemeral_containers:
            raise path_not_found()
        return self.store.update("pods", namespace, name, lambda cur: self._ephemeral_apply(
            cur, self._patched(cur, name, content_type, raw)))

    # -- deletion ---------------------------------------------------------------------------
    def delete(self, namespace: str, name: str, grace: int | None) -> Json:
        """Graceful when the pod's node has a kubelet to finish it (it removes the object once the
        containers are gone); immediate with gracePeriodSeconds=0 or on a node without one."""
        current = self.store.must_get("pods", namespace, name)
        if current["metadata"].get("deletionTimestamp") and grace != 0:
            return current
        node = current["spec"].get("nodeName") or ""
        if UNMANAGED in (current["metadata"].get("annotations") or {}):
            node = ""  # no kubelet will finish it
        seconds = grace if grace is not None else current["spec"].get("terminationGracePeriodSeconds", 30)
        if seconds and node and self._graceful(node) and current["status"].get("phase") not in ("Succeeded",
                                                                                                 "Failed"):
            def mark(cur: Json) -> Json:
                cur["metadata"]["deletionTimestamp"] = now()
                cur["metadata"]["deletionGracePeriodSeconds"] = seconds
                return cur
            return self.store.update("pods", namespace, name, mark)
        return self.store.remove("pods", namespace, name)


def decode(raw: bytes) -> Json:
    try:
        body = json.loads(raw or b"{}")
    except ValueError as err:
        raise bad_request(f"json: {err}") from None
    if not isinstance(body, dict):
        raise bad_request("json: cannot unmarshal array into Go value of type struct")
    return body


__all__ = ["ApiError", "Behaviours", "PodRegistry", "decode", "now"]
