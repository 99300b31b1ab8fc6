"""Watches as the API server streams them: newline-delimited events in a chunked 200 response,
until timeoutSeconds, the client leaving, or the server stopping. A too old resourceVersion is
answered the way the watch cache does (200, then one ERROR event with a 410 Status), and
`sendInitialEvents=true` ends the initial list with a BOOKMARK annotated
`k8s.io/initial-events-end`, as client-go's WatchList expects."""

from __future__ import annotations

import contextlib
import io
import json
import select
import socket
import time
from collections.abc import Iterator
from typing import Any, Protocol

from testbed.cluster.selectors import selector
from testbed.cluster.status import ApiError, bad_request
from testbed.cluster.store import Store

Json = dict[str, Any]
KINDS = {"pods": "Pod", "nodes": "Node", "namespaces": "Namespace"}


class Response(Protocol):
    """The part of the HTTP handler a watch writes through."""

    connection: socket.socket
    wfile: io.BufferedIOBase
    close_connection: bool

    def send_response(self, code: int, message: str | None = None) -> None: ...

    def send_header(self, keyword: str, value: str) -> None: ...

    def end_headers(self) -> None: ...

    def logged(self, code: int) -> None: ...


def stream(out: Response, store: Store, resource: str, namespace: str | None, query: dict[str, list[str]]) -> None:
    match = selector(resource, query.get("labelSelector", [""])[0], query.get("fieldSelector", [""])[0])
    rv_text = query.get("resourceVersion", [""])[0]
    initial = query.get("sendInitialEvents", [""])[0] == "true"
    if not (rv_text in ("", "0") or initial or rv_text.isdigit()):
        raise bad_request(f"resourceVersion: Invalid value: \"{rv_text}\": must be a non-negative integer")
    since = None if rv_text in ("", "0") or initial else int(rv_text)
    timeout = float(query.get("timeoutSeconds", ["1800"])[0] or 1800)
    events = store.watch(resource, namespace, match, since=since, deadline=time.monotonic() + timeout)
    out.send_response(200)
    out.send_header("Content-Type", "application/json")
    out.send_header("Transfer-Encoding", "chunked")
    out.send_header("Cache-Control", "no-cache, private")
    out.end_headers()
    out.logged(200)
    try:
        for event in _errors_as_events(events):
            if event is None:
                if _client_gone(out.connection):
                    return
                continue
            kind, obj = event
            if kind == "SYNCED":
                if initial:
                    _chunk(out.wfile, bookmark(resource, store.resource_version))
                continue
            _chunk(out.wfile, {"type": kind, "object": obj})
            if kind == "ERROR":
                return
    except OSError:
        out.close_connection = True
    finally:
        with contextlib.suppress(OSError):
            out.wfile.write(b"0\r\n\r\n")


def bookmark(resource: str, resource_version: int) -> Json:
    return {"type": "BOOKMARK", "object": {"kind": KINDS[resource], "apiVersion": "v1", "metadata": {
        "resourceVersion": str(resource_version), "annotations": {"k8s.io/initial-events-end": "true"}}}}


def _chunk(wfile: io.BufferedIOBase, obj: Json) -> None:
    data = json.dumps(obj).encode() + b"\n"
    wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    wfile.flush()


def _client_gone(connection: socket.socket) -> bool:
    """A watch client sends nothing after its request: anything readable is its close."""
    readable, _, _ = select.select([connection], [], [], 0)
    return bool(readable)


def _errors_as_events(events: Iterator[tuple[str, Json] | None]) -> Iterator[tuple[str, Json] | None]:
    try:
        yield from events
    except ApiError as err:
        yield "ERROR", err.status()
