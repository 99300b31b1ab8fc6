"""What the API server reads from a request's path before anything else: verb, group, resource,
subresource, namespace and name, as k8s.io/apiserver's RequestInfoFactory derives them. Authorization
decides on these, so they must match the real server's (a watch is `watch`, a GET without a name
`list`, a connect subresource `create`)."""

from __future__ import annotations

from dataclasses import dataclass

VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
GROUP_RESOURCES = {("authentication.k8s.io", "tokenreviews"), ("authentication.k8s.io", "selfsubjectreviews"),
                   ("authorization.k8s.io", "subjectaccessreviews"),
                   ("authorization.k8s.io", "selfsubjectaccessreviews")}


@dataclass(frozen=True)
class RequestInfo:
    """What k8s.io/apiserver's RequestInfoFactory derives from a path."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    is_resource: bool = True


def request_info(method: str, path: str, query: dict[str, list[str]]) -> RequestInfo | None:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis" and parts[2] == "v1":
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None
    watch_prefix = rest[0] == "watch"
    if watch_prefix:
        rest = rest[1:]
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    resource, name, sub = [*rest, "", "", ""][:3]
    if len(rest) > 3 or not resource:
        return None
    verb = VERBS.get(method, method.lower())
    if method == "GET" and not name:
        verb = "list"
    if watch_prefix or (method == "GET" and query.get("watch", [""])[0] in ("1", "true")):
        verb = "watch"
    if sub == "portforward":
        verb = "create"  # connect subresources need `create`, whichever method upgrades
    return RequestInfo(verb, group, resource, sub, namespace, name)
