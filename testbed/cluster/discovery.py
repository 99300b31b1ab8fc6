"""Discovery documents (`/version`, `/api`, `/apis`, `/api/v1`, the two auth groups), shaped as
kube-apiserver v1.32 serves them in their legacy (non-aggregated) form."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

VERSION: Json = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "70d3cc986aa8221cd1dfb1121852688902d3bf53",
    "gitTreeState": "clean", "buildDate": "2024-12-11T17:59:15Z", "goVersion": "go1.23.3", "compiler": "gc",
    "platform": "linux/amd64",
}
GROUPS = ("authentication.k8s.io", "authorization.k8s.io")
_ALL = ["create", "delete", "get", "list", "patch", "update", "watch"]


def api_versions(address: str) -> Json:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}


def api_groups() -> Json:
    groups = []
    for name in GROUPS:
        version = {"groupVersion": f"{name}/v1", "version": "v1"}
        groups.append({"name": name, "versions": [version], "preferredVersion": version})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _resource(name: str, kind: str, namespaced: bool, verbs: list[str], singular: str = "", **extra: Any) -> Json:
    return {"name": name, "singularName": singular, "namespaced": namespaced, "kind": kind, "verbs": verbs, **extra}


def core_v1(ephemeral_containers: bool) -> Json:
    """namespaces, nodes and pods (with the subresources the stand-in serves); pods/ephemeralcontainers only
    when the feature is on, as a server without it does not list it either."""
    resources = [
        _resource("namespaces", "Namespace", False, ["get", "list", "watch"], "namespace", shortNames=["ns"]),
        _resource("nodes", "Node", False, _ALL, "node", shortNames=["no"]),
        _resource("nodes/status", "Node", False, ["get", "patch", "update"]),
        _resource("pods", "Pod", True, _ALL, "pod", shortNames=["po"], categories=["all"]),
        _resource("pods/portforward", "PodPortForwardOptions", True, ["create", "get"]),
        _resource("pods/status", "Pod", True, ["get", "patch", "update"]),
    ]
    if ephemeral_containers:
        resources.insert(4, _resource("pods/ephemeralcontainers", "Pod", True, ["get", "patch", "update"]))
    return {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}


def group_v1(group: str) -> Json | None:
    if group == "authentication.k8s.io":
        resources = [_resource("selfsubjectreviews", "SelfSubjectReview", False, ["create"], "selfsubjectreview"),
                     _resource("tokenreviews", "TokenReview", False, ["create"], "tokenreview")]
    elif group == "authorization.k8s.io":
        resources = [
            _resource("selfsubjectaccessreviews", "SelfSubjectAccessReview", False, ["create"],
                      "selfsubjectaccessreview"),
            _resource("subjectaccessreviews", "SubjectAccessReview", False, ["create"], "subjectaccessreview")]
    else:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/v1", "resources": resources}
