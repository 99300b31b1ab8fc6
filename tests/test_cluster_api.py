"""The stand-in API server on its own (no kubelet, no root), driven by the official Python client
and by raw HTTPS: discovery, authentication, pods, selectors, watches, the ephemeralcontainers
subresource with every error shape the real server answers, reviews, port-forward and Tables."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as typed_client
from kubernetes import watch as typed_watch
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import portforward

from testbed.cluster import tls
from testbed.cluster.fixtures import request
from testbed.cluster.podspec import MIRROR_ANNOTATION
from testbed.cluster.portforward import Target
from testbed.cluster.standin import AGENT_NAMESPACE, TWO_NODES, Cluster

# The generated models make every field Optional; tests read them as the plain values they are.
client: Any = typed_client
watch: Any = typed_watch

Json = dict[str, Any]
EPHEMERAL = "/api/v1/namespaces/default/pods/web/ephemeralcontainers"
SMP = "application/strategic-merge-patch+json"
FORBIDDEN_FIELDS: dict[str, Any] = {
    "resources": {"limits": {"cpu": "100m"}},
    "ports": [{"containerPort": 80}],
    "livenessProbe": {"exec": {"command": ["true"]}},
    "readinessProbe": {"exec": {"command": ["true"]}},
    "startupProbe": {"exec": {"command": ["true"]}},
    "lifecycle": {"postStart": {"exec": {"command": ["true"]}}},
}


def pod(name: str, labels: dict[str, str] | None = None, **spec: Any) -> Json:
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "app", "image": "busybox"}], **spec}}


def debugger(name: str = "debugger", **fields: Any) -> Json:
    return {"name": name, "image": "busybox", "targetContainerName": "app", **fields}


@dataclass(frozen=True)
class Failure:
    status: int
    body: Any
    text: str


def failure(call: Callable[[], object]) -> Failure:
    """What an API call failed with. Unlike pytest.raises, keeps no traceback alive: the client's
    connection for an error response lives on the exception, and must close now, not at a later GC."""
    try:
        call()
    except ApiException as err:
        return Failure(int(err.status or 0), json.loads(err.body) if err.body else None, str(err))
    raise AssertionError("the call did not fail")


@pytest.fixture
def api(api_cluster: Cluster, user_client: Any) -> Any:
    return client.CoreV1Api(user_client(api_cluster, "admin-token"))


@pytest.fixture
def web(api: Any) -> Any:
    return api.create_namespaced_pod("default", pod("web"))


def patch_ephemeral(cluster: Cluster, patch: object, content_type: str = SMP, token: str = "admin-token",
                    name: str = "web") -> tuple[int, Json]:
    code, body, _ = request(cluster, "PATCH", f"/api/v1/namespaces/default/pods/{name}/ephemeralcontainers",
                            patch, token=token, content_type=content_type)
    return code, body


# -- discovery and authentication ---------------------------------------------------------------
def test_discovery_documents(api_cluster: Cluster) -> None:
    assert request(api_cluster, "GET", "/version")[1]["gitVersion"] == "v1.32.0"
    assert request(api_cluster, "GET", "/api")[1]["versions"] == ["v1"]
    groups = {g["name"] for g in request(api_cluster, "GET", "/apis")[1]["groups"]}
    assert groups == {"authentication.k8s.io", "authorization.k8s.io"}
    core = request(api_cluster, "GET", "/api/v1")[1]
    names = {r["name"] for r in core["resources"]}
    assert {"pods", "pods/ephemeralcontainers", "pods/status", "pods/portforward", "nodes"} <= names
    assert request(api_cluster, "GET", "/apis/authentication.k8s.io/v1")[1]["resources"][1]["name"] == "tokenreviews"
    authz = request(api_cluster, "GET", "/apis/authorization.k8s.io/v1")[1]
    assert "subjectaccessreviews" in {r["name"] for r in authz["resources"]}
    api_cluster.behaviours.ephemeral_containers = False
    core = request(api_cluster, "GET", "/api/v1")[1]
    assert "pods/ephemeralcontainers" not in {r["name"] for r in core["resources"]}


@pytest.mark.parametrize("token", [None, "no-such-token", "alice-agent-token"])
def test_every_request_needs_a_valid_token(api_cluster: Cluster, token: str | None) -> None:
    """alice-agent-token is real but for the agent's audience only, so the API server refuses it."""
    code, body, _ = request(api_cluster, "GET", "/api/v1/pods", token=token)
    assert code == 401
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


def test_the_python_client_sees_401(api_cluster: Cluster, user_client: Any) -> None:
    assert failure(lambda: client.CoreV1Api(user_client(api_cluster, "wrong")).list_namespaced_pod("default")
                   ).status == 401


def test_kubeconfig_points_at_the_tls_server(api_cluster: Cluster, tmp_path: Path) -> None:
    import yaml  # noqa: PLC0415

    config = yaml.safe_load(api_cluster.kubeconfig(tmp_path / "kc", "bob-token", "team").read_text())
    assert config["clusters"][0]["cluster"]["server"] == api_cluster.url
    assert api_cluster.url.startswith("https://127.0.0.1:")  # client-go sends tokens over TLS only
    assert config["users"][0]["user"]["token"] == "bob-token"
    assert config["contexts"][0]["context"]["namespace"] == "team"
    assert tls.credentials().ca.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


# -- pods, nodes, selectors -------------------------------------------------------------------
def test_create_fills_in_what_the_server_does(api: Any) -> None:
    created = api.create_namespaced_pod("default", pod("web", {"app": "web"}))
    assert created.metadata.uid and created.metadata.resource_version
    assert created.spec.node_name == "lab-node" and created.spec.restart_policy == "Always"
    assert created.spec.containers[0].termination_message_policy == "File"
    assert created.spec.containers[0].image_pull_policy == "Always"  # busybox means busybox:latest
    assert created.status.phase == "Pending" and created.status.qos_class == "BestEffort"
    assert api.read_namespaced_pod("web", "default").metadata.uid == created.metadata.uid
    again = failure(lambda: api.create_namespaced_pod("default", pod("web")))
    assert again.status == 409 and again.body["message"] == 'pods "web" already exists'
    empty = failure(lambda: api.create_namespaced_pod("default", {"metadata": {"name": "empty"},
                                                                  "spec": {"containers": []}}))
    assert empty.body["message"] == 'Pod "empty" is invalid: spec.containers: Required value'
    missing = failure(lambda: api.read_namespaced_pod("nope", "default"))
    assert missing.status == 404 and missing.body["details"] == {"name": "nope", "kind": "pods"}


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", {"a", "b"}), ("app==web", {"a", "b"}), ("app!=web", {"c", "d"}),
    ("tier in (fe,be)", {"a", "b"}), ("tier notin (fe)", {"b", "c", "d"}), ("tier", {"a", "b"}),
    ("!tier", {"c", "d"}), ("app=web,tier!=be", {"a"}), ("app in (db),!tier", {"c"}), ("", {"a", "b", "c", "d"}),
])
def test_label_selectors(api: Any, selector: str, expected: set[str]) -> None:
    for name, labels in (("a", {"app": "web", "tier": "fe"}), ("b", {"app": "web", "tier": "be"}),
                         ("c", {"app": "db"}), ("d", {})):
        api.create_namespaced_pod("default", pod(name, labels))
    got = api.list_namespaced_pod("default", label_selector=selector)
    assert {p.metadata.name for p in got.items} == expected


def test_field_selectors_and_bad_selectors(api_cluster: Cluster, api: Any) -> None:
    api.create_namespaced_pod("default", pod("a"))
    api.create_namespaced_pod("other", pod("b", nodeName="lab-node-2"))

    def names(**kw: str) -> set[str]:
        return {p.metadata.name for p in api.list_pod_for_all_namespaces(**kw).items}

    assert names(field_selector="metadata.name=a") == {"a"}
    assert names(field_selector="metadata.namespace=other") == {"b"}
    assert names(field_selector="spec.nodeName=lab-node-2") == {"b"}
    assert names(field_selector="spec.nodeName!=lab-node-2,metadata.namespace==default") == {"a"}
    code, body, _ = request(api_cluster, "GET", "/api/v1/pods?fieldSelector=spec.foo%3Dx")
    assert (code, body["reason"], body["message"]) == (400, "BadRequest", "field label not supported: spec.foo")
    code, body, _ = request(api_cluster, "GET", "/api/v1/pods?labelSelector=a%20in%20()")
    assert code == 400 and body["message"].startswith("unable to parse requirement")


def test_list_pages_and_resource_versions(api: Any) -> None:
    for name in ("p1", "p2", "p3"):
        api.create_namespaced_pod("default", pod(name))
    first = api.list_namespaced_pod("default", limit=2)
    assert [p.metadata.name for p in first.items] == ["p1", "p2"] and first.metadata.remaining_item_count == 1
    rest = api.list_namespaced_pod("default", limit=2, _continue=first.metadata._continue)
    assert [p.metadata.name for p in rest.items] == ["p3"] and not rest.metadata._continue
    whole = api.list_namespaced_pod("default")
    assert int(whole.metadata.resource_version) >= max(int(p.metadata.resource_version) for p in whole.items)


def test_nodes(api_cluster: Cluster, api: Any) -> None:
    [node] = api.list_node().items
    assert node.metadata.name == "lab-node" and node.status.conditions[0].type == "Ready"
    assert api.read_node("lab-node").status.addresses[0].address == "127.0.0.1"
    code, body, _ = request(api_cluster, "DELETE", "/api/v1/nodes/lab-node")
    assert code == 405 and body["reason"] == "MethodNotAllowed"
    assert api.read_namespace("default").status.phase == "Active"
    api.create_namespaced_pod("fresh", pod("p"))  # a namespace comes into being with its first pod
    assert "fresh" in {n.metadata.name for n in api.list_namespace().items}
    code, body, _ = request(api_cluster, "GET", "/api/v1/namespaces/none")
    assert (code, body["message"]) == (404, 'namespaces "none" not found')


def test_two_nodes_and_an_agent_on_each(user_client: Any) -> None:
    with Cluster(nodes=TWO_NODES) as two:
        api = client.CoreV1Api(user_client(two, "admin-token"))
        assert [n.metadata.name for n in api.list_node().items] == ["lab-node", "lab-node-2"]
        for node in ("lab-node", "lab-node-2"):
            two.register_agent(node, "127.0.0.1", 1)
        agents = api.list_namespaced_pod(AGENT_NAMESPACE, label_selector="app.kubernetes.io/name=nsinspect-agent")
        assert sorted(p.spec.node_name for p in agents.items) == ["lab-node", "lab-node-2"]
        assert all(p.status.phase == "Running" and p.status.container_statuses[0].ready for p in agents.items)
        assert all(p.metadata.owner_references[0].kind == "DaemonSet" for p in agents.items)
        on_second = api.list_pod_for_all_namespaces(field_selector="spec.nodeName=lab-node-2",
                                                    label_selector="app.kubernetes.io/name=nsinspect-agent")
        assert len(on_second.items) == 1


def test_status_subresource_changes_only_status(api: Any, web: Any) -> None:
    patched = api.patch_namespaced_pod_status("web", "default", {"status": {"phase": "Running"},
                                                                 "metadata": {"labels": {"ignored": "yes"}}})
    assert patched.status.phase == "Running" and not patched.metadata.labels
    current = api.read_namespaced_pod_status("web", "default")
    current.status.message = "set by a test"
    assert api.replace_namespaced_pod_status("web", "default", current).status.message == "set by a test"
    assert failure(lambda: api.replace_namespaced_pod_status("web", "default", current)).status == 409  # stale


def test_delete_without_a_kubelet_is_immediate(api: Any, web: Any) -> None:
    gone = api.delete_namespaced_pod("web", "default")
    assert gone.metadata.uid == web.metadata.uid
    assert api.list_namespaced_pod("default").items == []


def test_tables_for_kubectl(api_cluster: Cluster, web: Any) -> None:
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    table = request(api_cluster, "GET", "/api/v1/namespaces/default/pods", accept=accept)[1]
    assert table["kind"] == "Table" and [c["name"] for c in table["columnDefinitions"]][:3] == ["Name", "Ready",
                                                                                                 "Status"]
    assert table["rows"][0]["cells"][:3] == ["web", "0/1", "Pending"]
    assert request(api_cluster, "GET", "/api/v1/nodes", accept=accept)[1]["rows"][0]["cells"][1] == "Ready"


# -- watches ------------------------------------------------------------------------------------
def test_watch_replays_from_a_resource_version(api: Any) -> None:
    start = api.list_namespaced_pod("default").metadata.resource_version
    api.create_namespaced_pod("default", pod("w", {"app": "w"}))
    api.patch_namespaced_pod("w", "default", {"metadata": {"labels": {"app": "w", "seen": "yes"}}})
    api.delete_namespaced_pod("w", "default")
    w = watch.Watch()
    events = []
    for event in w.stream(api.list_namespaced_pod, "default", resource_version=start, timeout_seconds=5):
        events.append((event["type"], event["object"].metadata.name, event["object"].metadata.labels))
        if len(events) == 3:
            w.stop()
    assert [e[:2] for e in events] == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    assert events[1][2] == {"app": "w", "seen": "yes"}


def test_watch_sees_live_changes_and_selector_transitions(api: Any) -> None:
    """A pod that starts matching the selector is ADDED for this watch, one that stops is DELETED."""
    api.create_namespaced_pod("default", pod("x", {"app": "other"}))
    since = api.list_namespaced_pod("default").metadata.resource_version

    def changes() -> None:
        api.patch_namespaced_pod("x", "default", {"metadata": {"labels": {"app": "web"}}})
        api.patch_namespaced_pod("x", "default", {"metadata": {"labels": {"app": "db"}}})

    thread = threading.Thread(target=changes)
    thread.start()
    seen: list[tuple[str, str]] = []
    w = watch.Watch()
    for event in w.stream(api.list_namespaced_pod, "default", label_selector="app=web", resource_version=since,
                          timeout_seconds=10):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 2:
            w.stop()
    thread.join()
    assert seen == [("ADDED", "x"), ("DELETED", "x")]


def test_watch_lists_first_without_a_resource_version(api: Any) -> None:
    api.create_namespaced_pod("default", pod("early"))
    w = watch.Watch()
    for event in w.stream(api.list_namespaced_pod, "default", timeout_seconds=5):
        assert (event["type"], event["object"].metadata.name) == ("ADDED", "early")
        w.stop()


def test_watch_wire_format_and_expired_versions(api_cluster: Cluster, api: Any) -> None:
    import http.client  # noqa: PLC0415
    import ssl  # noqa: PLC0415

    start = int(api.list_namespaced_pod("default").metadata.resource_version)
    api.create_namespaced_pod("default", pod("v"))
    context = ssl.create_default_context(cafile=str(tls.credentials().ca))
    conn = http.client.HTTPSConnection(api_cluster.server.address.split(":")[0],
                                       int(api_cluster.server.address.split(":")[1]), context=context, timeout=10)
    conn.request("GET", f"/api/v1/namespaces/default/pods?watch=1&resourceVersion={start}&timeoutSeconds=1",
                 headers={"Authorization": "Bearer admin-token"})
    resp = conn.getresponse()
    assert resp.getheader("Transfer-Encoding") == "chunked"
    lines = resp.read().decode().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["ADDED"]
    conn.close()
    compacted = api_cluster.store.compact()
    code, _, _ = request(api_cluster, "GET", "/api/v1/pods")
    assert code == 200
    conn = http.client.HTTPSConnection("127.0.0.1", int(api_cluster.server.address.split(":")[1]),
                                       context=context, timeout=10)
    conn.request("GET", f"/api/v1/namespaces/default/pods?watch=true&resourceVersion={start}",
                 headers={"Authorization": "Bearer admin-token"})
    resp = conn.getresponse()
    assert resp.status == 200
    [line] = resp.read().decode().splitlines()
    assert json.loads(line) == {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {start} ({compacted})", "reason": "Expired", "code": 410}}
    conn.close()
    assert failure(lambda: list(watch.Watch().stream(api.list_namespaced_pod, "default", timeout_seconds=2,
                                                     resource_version=str(start)))).status == 410


# -- the ephemeralcontainers subresource ------------------------------------------------------
def test_strategic_merge_appends_and_get_returns_the_pod(api_cluster: Cluster, api: Any,
                                                         web: Any) -> None:
    kubectl_body = {"spec": {"ephemeralContainers": [{"image": "busybox", "name": "debugger-95fd8", "resources": {},
                                                      "targetContainerName": "app",
                                                      "terminationMessagePolicy": "File"}]}}
    first = api.patch_namespaced_pod_ephemeralcontainers("web", "default", kubectl_body)
    assert [c.name for c in first.spec.ephemeral_containers] == ["debugger-95fd8"]
    second = {"spec": {"$setElementOrder/ephemeralContainers": [{"name": "debugger-95fd8"}, {"name": "two"}],
                       "ephemeralContainers": [debugger("two")]}}
    code, body = patch_ephemeral(api_cluster, second)
    assert code == 200 and [c["name"] for c in body["spec"]["ephemeralContainers"]] == ["debugger-95fd8", "two"]
    got = api.read_namespaced_pod_ephemeralcontainers("web", "default")
    assert got.kind == "Pod" and got.spec.ephemeral_containers[1].target_container_name == "app"
    assert got.spec.ephemeral_containers[1].termination_message_path == "/dev/termination-log"
    assert int(got.metadata.resource_version) > int(web.metadata.resource_version)


def test_json_patch_and_merge_patch(api_cluster: Cluster, web: Any) -> None:
    add = [{"op": "add", "path": "/spec/ephemeralContainers", "value": [debugger("one")]}]
    assert patch_ephemeral(api_cluster, add, "application/json-patch+json")[0] == 200
    append = [{"op": "add", "path": "/spec/ephemeralContainers/-", "value": debugger("two")}]
    code, body = patch_ephemeral(api_cluster, append, "application/json-patch+json")
    assert code == 200 and [c["name"] for c in body["spec"]["ephemeralContainers"]] == ["one", "two"]
    code, body = patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [
        *body["spec"]["ephemeralContainers"], debugger("three")]}}, "application/merge-patch+json")
    assert code == 200 and len(body["spec"]["ephemeralContainers"]) == 3
    code, body = patch_ephemeral(api_cluster, [{"op": "test", "path": "/spec/nodeName", "value": "x"}],
                                 "application/json-patch+json")
    assert (code, body["reason"]) == (422, "Invalid")
    code, body = patch_ephemeral(api_cluster, {"spec": {}}, "application/apply-patch+yaml")
    assert (code, body["reason"]) == (415, "UnsupportedMediaType")


def test_other_pod_fields_are_dropped(api_cluster: Cluster, web: Any) -> None:
    code, body = patch_ephemeral(api_cluster, {"metadata": {"labels": {"sneaky": "yes"}},
                                               "spec": {"nodeName": "elsewhere",
                                                        "ephemeralContainers": [debugger()]}})
    assert code == 200 and body["spec"]["nodeName"] == "lab-node" and not body["metadata"].get("labels")


@pytest.mark.parametrize("field", sorted(FORBIDDEN_FIELDS))
def test_forbidden_fields_are_422(api_cluster: Cluster, web: Any, field: str) -> None:
    code, body = patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [
        debugger(**{field: FORBIDDEN_FIELDS[field]})]}})
    path = f"spec.ephemeralContainers[0].{field}"
    assert code == 422
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": f'Pod "web" is invalid: {path}: Forbidden: cannot be set for an Ephemeral Container',
                    "reason": "Invalid", "details": {"name": "web", "kind": "Pod", "causes": [
                        {"reason": "FieldValueForbidden", "message": "Forbidden: cannot be set for an Ephemeral "
                                                                     "Container", "field": path}]}, "code": 422}


def test_duplicate_name_and_unknown_target_are_422(api_cluster: Cluster, web: Any) -> None:
    code, body = patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [debugger("app")]}})
    assert (code, body["message"]) == (422, 'Pod "web" is invalid: spec.ephemeralContainers[0].name: '
                                            'Duplicate value: "app"')
    code, body = patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [debugger(targetContainerName="x")]}})
    assert body["message"] == 'Pod "web" is invalid: spec.ephemeralContainers[0].targetContainerName: Not found: "x"'
    assert body["details"]["causes"] == [{"reason": "FieldValueNotFound", "message": 'Not found: "x"',
                                          "field": "spec.ephemeralContainers[0].targetContainerName"}]
    code, body = patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [
        debugger("two", ports=[{"containerPort": 1}], targetContainerName="x")]}})
    assert body["message"] == ('Pod "web" is invalid: [spec.ephemeralContainers[0].targetContainerName: Not found: '
                               '"x", spec.ephemeralContainers[0].ports: Forbidden: cannot be set for an Ephemeral '
                               'Container]')


def test_existing_ephemeral_containers_cannot_be_removed_or_changed(api_cluster: Cluster, web: Any) -> None:
    assert patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [debugger()]}})[0] == 200
    code, body = patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [debugger("other")]}},
                                 "application/merge-patch+json")
    assert code == 422
    assert body["message"] == ('Pod "web" is invalid: spec.ephemeralContainers: Forbidden: existing ephemeral '
                               'containers "debugger" may not be removed\n')
    assert body["details"]["causes"][0]["field"] == "spec.ephemeralContainers"
    code, body = patch_ephemeral(api_cluster, [{"op": "replace", "path": "/spec/ephemeralContainers/0/image",
                                                "value": "alpine"}], "application/json-patch+json")
    assert code == 422 and body["message"].startswith(
        'Pod "web" is invalid: spec.ephemeralContainers: Forbidden: existing ephemeral containers "debugger" may '
        "not be changed\n")
    assert '"alpine"' in body["message"]


def test_static_pods_refuse_ephemeral_containers(api_cluster: Cluster, api: Any) -> None:
    mirror = pod("static")
    mirror["metadata"]["annotations"] = {MIRROR_ANNOTATION: "abc"}
    api.create_namespaced_pod("default", mirror)
    code, body = patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [debugger()]}}, name="static")
    assert (code, body["message"]) == (422, 'Pod "static" is invalid: : Forbidden: static pods do not support '
                                            "ephemeral containers")


def test_put_is_optimistically_locked(api_cluster: Cluster, api: Any, web: Any) -> None:
    current = api.read_namespaced_pod_ephemeralcontainers("web", "default")
    stale = api_client_dict(api, current)
    stale["spec"]["ephemeralContainers"] = [debugger()]
    api.patch_namespaced_pod("web", "default", {"metadata": {"labels": {"bump": "1"}}})
    code, body, _ = request(api_cluster, "PUT", EPHEMERAL, stale)
    assert code == 409
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": 'Operation cannot be fulfilled on pods "web": the object has been modified; please '
                               "apply your changes to the latest version and try again",
                    "reason": "Conflict", "details": {"name": "web", "kind": "pods"}, "code": 409}
    fresh = api_client_dict(api, api.read_namespaced_pod_ephemeralcontainers("web", "default"))
    fresh["spec"]["ephemeralContainers"] = [debugger()]
    done = api.replace_namespaced_pod_ephemeralcontainers("web", "default", fresh)
    assert [c.name for c in done.spec.ephemeral_containers] == ["debugger"]


def api_client_dict(api: Any, obj: object) -> Json:
    return api.api_client.sanitize_for_serialization(obj)  # type: ignore[no-any-return]


def test_disabled_is_a_404_without_a_name(api_cluster: Cluster, api: Any, web: Any) -> None:
    """kubectl debug tells 'disabled' from 'no such pod' by details.name, so both shapes matter."""
    code, missing = patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [debugger()]}}, name="nope")
    assert (code, missing["message"], missing["details"]) == (404, 'pods "nope" not found',
                                                              {"name": "nope", "kind": "pods"})
    api_cluster.behaviours.ephemeral_containers = False
    code, disabled = patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [debugger()]}})
    assert code == 404
    assert disabled == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "the server could not find the requested resource", "reason": "NotFound",
                        "details": {}, "code": 404}
    seen = failure(lambda: api.read_namespaced_pod_ephemeralcontainers("web", "default"))
    assert seen.status == 404 and not seen.body["details"].get("name")


def test_rbac_denial_is_the_real_403(api_cluster: Cluster, web: Any) -> None:
    code, body = patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [debugger()]}}, token="alice-token")
    assert code == 403
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": 'pods "web" is forbidden: User "alice" cannot patch resource '
                               '"pods/ephemeralcontainers" in API group "" in the namespace "default"',
                    "reason": "Forbidden", "details": {"name": "web", "kind": "pods"}, "code": 403}
    assert patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [debugger()]}}, token="bob-token")[0] == 200
    code, body, _ = request(api_cluster, "GET", "/api/v1/nodes", token="bob-token")
    assert code == 200
    code, body, _ = request(api_cluster, "DELETE", "/api/v1/namespaces/default/pods/web", token="bob-token")
    assert body["message"] == ('pods "web" is forbidden: User "bob" cannot delete resource "pods" in API group "" in '
                               'the namespace "default"')


def test_pod_security_admission(api_cluster: Cluster, api: Any, web: Any) -> None:
    api_cluster.behaviours.pod_security["default"] = "restricted"
    code, body = patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [debugger()]}})
    assert code == 403 and body["reason"] == "Forbidden" and body["details"] == {"name": "web", "kind": "pods"}
    assert body["message"] == (
        'pods "web" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false '
        '(containers "app", "debugger" must set securityContext.allowPrivilegeEscalation=false), unrestricted '
        'capabilities (containers "app", "debugger" must set securityContext.capabilities.drop=["ALL"]), '
        'runAsNonRoot != true (pod or containers "app", "debugger" must set securityContext.runAsNonRoot=true), '
        'seccompProfile (pod or containers "app", "debugger" must set securityContext.seccompProfile.type to '
        '"RuntimeDefault" or "Localhost")')
    api_cluster.behaviours.pod_security["default"] = "baseline"
    code, body = patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [
        debugger(securityContext={"privileged": True})]}})
    assert body["message"] == ('pods "web" is forbidden: violates PodSecurity "baseline:latest": privileged '
                               '(container "debugger" must not set securityContext.privileged=true)')
    code, body = patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [
        debugger(securityContext={"capabilities": {"add": ["SYS_PTRACE"]}})]}})
    assert body["message"].endswith('non-default capabilities (container "debugger" must not include "SYS_PTRACE" '
                                    "in securityContext.capabilities.add)")
    assert patch_ephemeral(api_cluster, {"spec": {"ephemeralContainers": [debugger()]}})[0] == 200


def test_restricted_namespace_admits_a_compliant_debugger(api_cluster: Cluster, api: Any) -> None:
    api_cluster.behaviours.pod_security["locked"] = "restricted"
    restricted_sc = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    locked = pod("web", securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}})
    locked["spec"]["containers"][0]["securityContext"] = restricted_sc
    api.create_namespaced_pod("locked", locked)
    patched = api.patch_namespaced_pod_ephemeralcontainers("web", "locked", {"spec": {"ephemeralContainers": [
        debugger(securityContext=restricted_sc)]}})
    assert patched.spec.ephemeral_containers[0].name == "debugger"
    loose = failure(lambda: api.create_namespaced_pod("locked", pod("loose")))
    assert loose.status == 403 and loose.body["message"].startswith('pods "loose" is forbidden: violates PodSecurity')


# -- authentication and authorization reviews ---------------------------------------------------
def test_token_reviews(api_cluster: Cluster, user_client: Any) -> None:
    agent = client.AuthenticationV1Api(user_client(api_cluster, "agent-token"))
    review = agent.create_token_review({"spec": {"token": "bob-agent-token", "audiences": ["nsinspect"]}})
    assert review.status.authenticated and review.status.audiences == ["nsinspect"]
    assert review.status.user.username == "bob" and "debuggers" in review.status.user.groups
    wrong = agent.create_token_review({"spec": {"token": "alice-agent-token", "audiences": ["other"]}})
    assert not wrong.status.authenticated and "invalid for the target audiences" in wrong.status.error
    unknown = agent.create_token_review({"spec": {"token": "made-up"}})
    assert not unknown.status.authenticated and unknown.status.error
    alice = client.AuthenticationV1Api(user_client(api_cluster, "alice-token"))
    assert failure(lambda: alice.create_token_review({"spec": {"token": "bob-token"}})).body["message"] == (
        'tokenreviews.authentication.k8s.io is forbidden: User "alice" cannot create resource "tokenreviews" in '
        'API group "authentication.k8s.io" at the cluster scope')


def test_subject_access_reviews(api_cluster: Cluster, user_client: Any) -> None:
    agent = client.AuthorizationV1Api(user_client(api_cluster, "agent-token"))
    attrs = {"namespace": "default", "verb": "patch", "resource": "pods", "subresource": "ephemeralcontainers",
             "name": "web"}
    bob = agent.create_subject_access_review({"spec": {"user": "bob", "groups": ["debuggers"],
                                                       "resourceAttributes": attrs}})
    assert bob.status.allowed and 'to Group "debuggers"' in bob.status.reason
    alice = agent.create_subject_access_review({"spec": {"user": "alice", "groups": ["developers"],
                                                         "resourceAttributes": attrs}})
    assert not alice.status.allowed
    admin = agent.create_subject_access_review({"spec": {"user": "root", "groups": ["system:masters"],
                                                         "resourceAttributes": {**attrs, "verb": "create",
                                                                                "subresource": "exec"}}})
    assert admin.status.allowed
    mine = client.AuthorizationV1Api(user_client(api_cluster, "alice-token"))
    review = mine.create_self_subject_access_review({"spec": {"resourceAttributes": {
        "namespace": "default", "verb": "list", "resource": "pods"}}})
    assert review.status.allowed


# -- port-forward ---------------------------------------------------------------------------------
@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1, standing in for an agent's port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


def _roundtrip(pf: Any, port: int, payload: bytes) -> bytes:
    sock = pf.socket(port)
    sock.settimeout(10)
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_portforward_reaches_the_agent_pod(api_cluster: Cluster, user_client: Any, echo_server: int) -> None:
    agent_pod = api_cluster.register_agent("lab-node", "127.0.0.1", echo_server)
    bob = client.CoreV1Api(user_client(api_cluster, "bob-token"))
    found = bob.list_namespaced_pod(AGENT_NAMESPACE, label_selector="app.kubernetes.io/name=nsinspect-agent",
                                    field_selector="spec.nodeName=lab-node").items
    assert [p.metadata.name for p in found] == [agent_pod["metadata"]["name"]]
    pf = portforward(bob.connect_get_namespaced_pod_portforward, found[0].metadata.name, AGENT_NAMESPACE,
                     ports="7443")
    payload = b"x" * 200_000 + b"end"
    assert _roundtrip(pf, 7443, payload) == payload
    assert pf.error(7443) is None
    pf.close()


def test_portforward_errors(api_cluster: Cluster, user_client: Any, echo_server: int) -> None:
    agent_pod = api_cluster.register_agent("lab-node", "127.0.0.1", echo_server)
    name = agent_pod["metadata"]["name"]
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    api_cluster.map_port(AGENT_NAMESPACE, name, 9000, Target("127.0.0.1", closed_port))
    admin = client.CoreV1Api(user_client(api_cluster, "admin-token"))
    pf = portforward(admin.connect_get_namespaced_pod_portforward, name, AGENT_NAMESPACE, ports="7443,9000,9001")
    assert _roundtrip(pf, 7443, b"still works") == b"still works"
    sock = pf.socket(9000)
    sock.settimeout(10)
    assert sock.recv(1) == b""
    assert "connection refused" in (pf.error(9000) or "").lower()
    pf.close()
    alice = client.CoreV1Api(user_client(api_cluster, "alice-token"))
    assert "403" in failure(lambda: portforward(alice.connect_get_namespaced_pod_portforward, name,
                                                AGENT_NAMESPACE, ports="7443")).text
    _, body, _ = request(api_cluster, "GET", f"/api/v1/namespaces/{AGENT_NAMESPACE}/pods/{name}/portforward"
                                             "?ports=7443", token="alice-token")
    assert body["message"] == (f'pods "{name}" is forbidden: User "alice" cannot create resource "pods/portforward" '
                               f'in API group "" in the namespace "{AGENT_NAMESPACE}"')

