"""A thin client for the CRI runtime service (containerd, CRI-O) over its unix socket.

It speaks only the runtime.v1 subset in proto/cri.proto and turns transport failures into
RuntimeUnavailable and unknown ids into NotFound; deciding what the answers mean is left to callers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import grpc

from nsinspect.proto import cri_pb2 as cri
from nsinspect.proto import cri_pb2_grpc as cri_grpc
from nsinspect.proto.rpcerror import rpc_status

from ..core.errors import NotFound, RuntimeUnavailable

# Where runtimes put their CRI socket by default, in the order we try them.
STANDARD_ENDPOINTS = (
    "unix:///run/containerd/containerd.sock",
    "unix:///var/run/crio/crio.sock",
    "unix:///run/cri-dockerd.sock",
)


def find_endpoint(configured: str | None = None) -> str | None:
    """The configured endpoint, else the first standard socket that exists on this node."""
    if configured:
        return configured if "://" in configured else f"unix://{configured}"
    for endpoint in STANDARD_ENDPOINTS:
        if os.path.exists(endpoint.removeprefix("unix://")):
            return endpoint
    return None


class CriUnavailable(RuntimeUnavailable):
    """A CRI call failed; `kind` is its status code's name in lower case ("unavailable", ...)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _verbose_info(info: Mapping[str, str]) -> dict[str, Any]:
    """containerd and CRI-O put a JSON document under the key "info" when asked to be verbose."""
    raw = info.get("info")
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class CriClient:
    """One channel to one runtime; cheap calls, safe to share between threads."""

    def __init__(self, endpoint: str, timeout: float = 2.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._channel = grpc.insecure_channel(endpoint, options=[
            ("grpc.max_receive_message_length", 32 << 20),
            # Find a restarted runtime within a second instead of gRPC's default backoff of up to 2 minutes.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ])
        self.runtime = cri_grpc.RuntimeServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *exc: object | type[BaseException] | TracebackType | None) -> None:
        self.close()

    def _call(self, method: Any, request: Any, what: str = "") -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            code, detail = rpc_status(err)
            if code == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"{what or 'object'} not found in the runtime: {detail}") from None
            name = code.name if code else "error"
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                raise CriUnavailable(f"container runtime at {self.endpoint} is unavailable: {detail}",
                                     name.lower()) from None
            # Any other failure means the runtime cannot answer this now: callers fall back to /proc.
            raise CriUnavailable(f"container runtime at {self.endpoint} failed ({name}): {detail}",
                                 name.lower()) from None

    def version(self) -> cri.VersionResponse:
        return self._call(self.runtime.Version, cri.VersionRequest())  # type: ignore[no-any-return]

    def runtime_ready(self) -> bool:
        status = self._call(self.runtime.Status, cri.StatusRequest()).status
        return any(c.type == "RuntimeReady" and c.status for c in status.conditions)

    def list_sandboxes(self, labels: Mapping[str, str] | None = None, *, sandbox_id: str = "",
                       ready_only: bool = False) -> list[cri.PodSandbox]:
        filt = cri.PodSandboxFilter(id=sandbox_id, label_selector=dict(labels or {}))
        if ready_only:
            filt.state.state = cri.SANDBOX_READY
        return list(self._call(self.runtime.ListPodSandbox, cri.ListPodSandboxRequest(filter=filt)).items)

    def list_containers(self, labels: Mapping[str, str] | None = None, *,
                        sandbox_id: str = "", container_id: str = "") -> list[cri.Container]:
        filt = cri.ContainerFilter(id=container_id, pod_sandbox_id=sandbox_id, label_selector=dict(labels or {}))
        return list(self._call(self.runtime.ListContainers, cri.ListContainersRequest(filter=filt)).containers)

    def sandbox_status(self, sandbox_id: str) -> tuple[cri.PodSandboxStatus, dict[str, Any]]:
        """The sandbox's status and the runtime's verbose info (pid, runtimeSpec, config, ...)."""
        resp = self._call(self.runtime.PodSandboxStatus,
                          cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True),
                          f"pod sandbox {sandbox_id}")
        return resp.status, _verbose_info(resp.info)

    def container_status(self, container_id: str) -> tuple[cri.ContainerStatus, dict[str, Any]]:
        resp = self._call(self.runtime.ContainerStatus,
                          cri.ContainerStatusRequest(container_id=container_id, verbose=True),
                          f"container {container_id}")
        return resp.status, _verbose_info(resp.info)
