"""The HTTP half of the stand-in: kube-apiserver's paths, filters and wire formats on 127.0.0.1.

Each request goes through the real server's chain: authentication (bearer token, else 401),
request info (verb, resource, subresource, namespace, name from the path), RBAC-like
authorization (else 403), then the handler. JSON only; `as=Table` gets a server-side Table for
pods and nodes; watches stream newline-delimited events with chunked transfer encoding.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from testbed.cluster import discovery, portforward, tables, tls, watch
from testbed.cluster.auth import Authority, User
from testbed.cluster.registry import PodRegistry, decode
from testbed.cluster.requestinfo import GROUP_RESOURCES, RequestInfo, request_info
from testbed.cluster.selectors import selector
from testbed.cluster.status import (
    ApiError,
    bad_request,
    forbidden_error,
    method_not_supported,
    not_found_error,
    path_not_found,
    unauthorized,
    unsupported_media_type,
)
from testbed.cluster.store import Store
from testbed.cluster.websocket import WebSocket, accept_key, choose_protocol

Json = dict[str, Any]
Resolver = Callable[[Json, int], "portforward.Target | None"]
@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    user: str
    code: int
    content_type: str


class ApiServer:
    """The server object; `start()` binds 127.0.0.1 on a free port and serves on a thread."""

    def __init__(self, store: Store, authority: Authority, registry: PodRegistry, resolve_port: Resolver) -> None:
        self.store = store
        self.authority = authority
        self.registry = registry
        self.resolve_port = resolve_port
        self.log: deque[Logged] = deque(maxlen=2000)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    def start(self) -> str:
        server = self

        class Handler(_Handler):
            api = server

        self._httpd = _TLSServer(("127.0.0.1", 0), Handler)
        self._httpd.context = tls.credentials().server_context()
        self._httpd.daemon_threads = False
        self._httpd.block_on_close = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="standin-apiserver", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self.store.close()
        with self._lock:
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()  # joins the handler threads
        if self._thread:
            self._thread.join(5)
        self._httpd = None

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)


class _TLSServer(ThreadingHTTPServer):
    """HTTPS: the TLS handshake runs in the handler's thread, never in the accept loop."""

    context: ssl.SSLContext

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-request is not the server's problem


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: ApiServer
    server_version = "nsinspect-standin"

    def setup(self) -> None:
        self.request.settimeout(10)
        self.request.do_handshake()
        self.request.settimeout(None)
        super().setup()
        self.api.track(self.connection, True)

    def finish(self) -> None:
        self.api.track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ---------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while (size := int(self.rfile.readline().strip() or b"0", 16)) > 0:
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, obj: Json) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(body)
        self.logged(code)

    def logged(self, code: int) -> None:
        self.api.log.append(Logged(self.command, self.path, getattr(self, "user_name", ""), code,
                                   self.headers.get("Content-Type", "")))

    def _handle(self) -> None:
        try:
            self._route()
        except ApiError as err:
            self._send(err.code, err.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # a stand-in bug: answer as the real server does, with a 500 Status
            self._send(500, ApiError(500, "InternalError", f"Internal error occurred: {err}").status())
            raise

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _authenticate(self) -> User:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            raise unauthorized()
        user, _ = self.api.authority.authenticate(header[7:].strip())
        if user is None:
            raise unauthorized()
        self.user_name = user.name
        return user

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        raw = self._body() if self.command in ("POST", "PUT", "PATCH", "DELETE") else b""
        user = self._authenticate()
        content_type = self.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if raw and self.command in ("POST", "PUT") and content_type != "application/json":
            raise unsupported_media_type(["application/json"])  # no protobuf, CBOR or YAML here
        info = request_info(self.command, url.path, query)
        if info is None:
            self._non_resource(url.path)
            return
        decision = self.api.authority.authorize(user.name, user.groups, info.verb, group=info.group,
                                                resource=info.resource, subresource=info.subresource,
                                                namespace=info.namespace, name=info.name)
        if not decision.allowed:
            resource = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
            where = (f'in the namespace "{info.namespace}"' if info.namespace else "at the cluster scope")
            raise forbidden_error(info.resource, info.name, f'User "{user.name}" cannot {info.verb} resource '
                                                            f'"{resource}" in API group "{info.group}" {where}',
                                  group=info.group)
        if info.group:
            self._group_resource(info, user, raw)
        elif info.resource == "pods":
            self._pods(info, query, raw)
        elif info.resource in ("nodes", "namespaces") and not info.namespace:
            self._cluster_scoped(info.resource, info, query)
        else:
            raise path_not_found()

    def _non_resource(self, path: str) -> None:
        if self.command != "GET":
            raise path_not_found()
        path = path.rstrip("/") or "/"
        if path == "/version":
            self._send(200, discovery.VERSION)
        elif path == "/api":
            self._send(200, discovery.api_versions(self.api.address))
        elif path == "/apis":
            self._send(200, discovery.api_groups())
        elif path == "/api/v1":
            self._send(200, discovery.core_v1(self.api.registry.behaviours.ephemeral_containers))
        elif path.startswith("/apis/") and path.endswith("/v1") and (doc := discovery.group_v1(path.split("/")[2])):
            self._send(200, doc)
        elif path in ("/healthz", "/livez", "/readyz"):
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            raise path_not_found()

    def _group_resource(self, info: RequestInfo, user: User, raw: bytes) -> None:
        if (info.group, info.resource) not in GROUP_RESOURCES or info.name or info.namespace:
            raise path_not_found()
        if self.command != "POST":
            raise method_not_supported(info.resource, self.command.lower())
        body = decode(raw)
        auth = self.api.authority
        if info.resource == "tokenreviews":
            self._send(201, auth.token_review(body))
        elif info.resource == "subjectaccessreviews":
            self._send(201, auth.access_review(body))
        elif info.resource == "selfsubjectaccessreviews":
            self._send(201, auth.access_review(body, "SelfSubjectAccessReview", as_user=user))
        else:
            self._send(201, {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                             "metadata": {"creationTimestamp": None}, "status": {"userInfo": user.info()}})

    # -- reading ----------------------------------------------------------------------------
    def _wants_table(self, resource: str) -> bool:
        return resource in ("pods", "nodes") and "as=Table" in self.headers.get("Accept", "")

    def _list(self, resource: str, namespace: str | None, query: dict[str, list[str]]) -> None:
        match = selector(resource, query.get("labelSelector", [""])[0], query.get("fieldSelector", [""])[0])
        items, rv = self.api.store.list(resource, namespace, match)
        limit = int(query.get("limit", ["0"])[0] or 0)
        start = query.get("continue", [""])[0]
        if start:
            try:
                after = json.loads(base64.urlsafe_b64decode(start))["start"]
            except (ValueError, KeyError, TypeError):
                raise bad_request("continue key is not valid: illegal base64 data") from None
            items = [i for i in items if f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}" > after]
        meta: Json = {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            token = json.dumps({"rv": rv, "start": f"{last.get('namespace', '')}/{last['name']}"})
            meta["continue"] = base64.urlsafe_b64encode(token.encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if self._wants_table(resource):
            self._send(200, (tables.pods_table if resource == "pods" else tables.nodes_table)(items, rv))
            return
        kind = {"pods": "PodList", "nodes": "NodeList", "namespaces": "NamespaceList"}[resource]
        self._send(200, {"kind": kind, "apiVersion": "v1", "metadata": meta, "items": items})

    def _get(self, resource: str, namespace: str, name: str) -> None:
        obj = self.api.store.must_get(resource, namespace, name)
        if self._wants_table(resource):
            render = tables.pods_table if resource == "pods" else tables.nodes_table
            self._send(200, render([obj], int(obj["metadata"]["resourceVersion"])))
        else:
            self._send(200, obj)

    def _watch(self, resource: str, namespace: str | None, query: dict[str, list[str]]) -> None:
        watch.stream(self, self.api.store, resource, namespace, query)

    # -- pods and nodes -----------------------------------------------------------------------
    def _cluster_scoped(self, resource: str, info: RequestInfo, query: dict[str, list[str]]) -> None:
        """Nodes and namespaces are read-only here: the stand-in makes them itself."""
        if info.subresource or info.verb not in ("get", "list", "watch"):
            raise method_not_supported(resource, info.verb)
        if info.verb == "watch":
            self._watch(resource, None, _name_query(query, info.name))
        elif info.name:
            self._get(resource, "", info.name)
        else:
            self._list(resource, None, query)

    def _pods(self, info: RequestInfo, query: dict[str, list[str]], raw: bytes) -> None:
        reg, ns, name = self.api.registry, info.namespace, info.name
        namespace = ns or None
        if info.subresource == "portforward":
            self._portforward(ns, name, query)
            return
        if info.subresource == "ephemeralcontainers":
            if info.verb == "get":
                self._send(200, reg.ephemeral_get(ns, name))
            elif info.verb == "update":
                self._send(200, reg.ephemeral_put(ns, name, decode(raw)))
            elif info.verb == "patch":
                self._send(200, reg.ephemeral_patch(ns, name, self.headers.get("Content-Type", ""), raw))
            else:
                raise method_not_supported("pods/ephemeralcontainers", info.verb)
            return
        if info.subresource == "status":
            if info.verb == "get":
                self._get("pods", ns, name)
            elif info.verb == "update":
                self._send(200, reg.update_status(ns, name, decode(raw)))
            elif info.verb == "patch":
                self._send(200, reg.patch_status(ns, name, self.headers.get("Content-Type", ""), raw))
            else:
                raise method_not_supported("pods/status", info.verb)
            return
        if info.subresource:
            raise path_not_found()
        if info.verb == "watch":
            self._watch("pods", namespace, _name_query(query, name))
        elif info.verb == "list":
            self._list("pods", namespace, query)
        elif info.verb == "get":
            self._get("pods", ns, name)
        elif info.verb == "create" and ns and not name:
            self._send(201, reg.create(ns, decode(raw)))
        elif info.verb == "update" and name:
            self._send(200, reg.update(ns, name, decode(raw)))
        elif info.verb == "patch" and name:
            self._send(200, reg.patch(ns, name, self.headers.get("Content-Type", ""), raw))
        elif info.verb == "delete" and name:
            options = decode(raw) if raw else {}
            grace_text = query.get("gracePeriodSeconds", [""])[0]
            grace = int(grace_text) if grace_text else options.get("gracePeriodSeconds")
            self._send(200, reg.delete(ns, name, grace))
        else:
            raise method_not_supported("pods", info.verb)

    def _portforward(self, namespace: str, name: str, query: dict[str, list[str]]) -> None:
        pod = self.api.store.get("pods", namespace, name)
        if pod is None:
            raise not_found_error("pods", name)
        if self.headers.get("Upgrade", "").lower() != "websocket":
            raise bad_request("Upgrade request required")
        ports = []
        for value in query.get("ports", []):
            for text in value.split(","):
                if not text.strip().isdigit() or not 0 < int(text) < 65536:
                    raise bad_request(f"invalid port {text!r}")
                ports.append(int(text))
        if not ports:
            raise bad_request("at least one port must be specified")
        protocol = choose_protocol(self.headers.get("Sec-WebSocket-Protocol", ""), (portforward.PROTOCOL,))
        if protocol is None:
            raise bad_request(f"unable to upgrade: no protocol in common, supported: {portforward.PROTOCOL}")
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(self.headers.get("Sec-WebSocket-Key", "")))
        self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        self.wfile.flush()
        self.logged(101)
        self.close_connection = True

        portforward.serve(WebSocket(self.connection, self.rfile), ports, lambda port: self.api.resolve_port(pod, port),
                          f"{namespace}/{name}")


def _name_query(query: dict[str, list[str]], name: str) -> dict[str, list[str]]:
    """A watch on one named object is a watch with fieldSelector metadata.name=NAME."""
    if not name:
        return query
    fields = [f for f in query.get("fieldSelector", [""])[0].split(",") if f]
    return {**query, "fieldSelector": [",".join([*fields, f"metadata.name={name}"])]}
