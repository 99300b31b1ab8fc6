"""pytest fixtures for the stand-in cluster (made available to every test by tests/conftest.py).

- `api_cluster`: the API server alone (no kubelet, no root): pods are stored and bound, stay Pending.
- `cluster`: API server plus a kubelet on the lab's containerd for node `lab-node`.
- `kubeconfig`: a kubeconfig file for `cluster` as the admin user, default namespace `default`.
- `k8s`: a `kubernetes.client.ApiClient` for `cluster`, configured from that kubeconfig.
- `user_client(cluster, token)`: a client for any test user, closed at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from testbed.cluster.standin import Cluster
    from testbed.lab.config import LabConfig


def client_for(cluster: Cluster, token: str, path: Path) -> Any:
    """A kubernetes ApiClient from a kubeconfig written for `token` (the way a user would have it)."""
    from kubernetes import config  # noqa: PLC0415 - kubernetes is slow to import

    return config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig(path, token)))


@pytest.fixture
def user_client(tmp_path: Path) -> Iterator[Callable[[Cluster, str], Any]]:
    """`user_client(cluster, token)`: an ApiClient for that user, closed when the test ends (an
    unclosed one would drop its sockets at some later garbage collection, in another test)."""
    made: list[Any] = []

    def make(cluster: Cluster, token: str) -> Any:
        made.append(client_for(cluster, token, tmp_path / f"user-{len(made)}.kubeconfig"))
        return made[-1]

    yield make
    for api_client in made:
        api_client.close()


@pytest.fixture
def api_cluster() -> Iterator[Cluster]:
    from testbed.cluster.standin import Cluster  # noqa: PLC0415

    with Cluster() as running:
        yield running


@pytest.fixture
def cluster(lab_cfg: LabConfig) -> Iterator[Cluster]:
    from testbed.cluster.standin import Cluster  # noqa: PLC0415

    with Cluster(lab_cfg) as running:
        yield running


@pytest.fixture
def kubeconfig(cluster: Cluster, tmp_path: Path) -> Path:
    return cluster.kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def k8s(cluster: Cluster, tmp_path: Path) -> Iterator[Any]:
    client = client_for(cluster, "admin-token", tmp_path / "admin.kubeconfig")
    yield client
    client.close()


def request(cluster: Cluster, method: str, path: str, body: object = None, *, token: str | None = "admin-token",
            content_type: str = "application/json", accept: str = "application/json") -> tuple[int, Any, Any]:
    """One raw HTTPS request to the stand-in: (status code, decoded JSON body, headers)."""
    import json  # noqa: PLC0415
    import ssl  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    from testbed.cluster import tls  # noqa: PLC0415

    headers = {"Content-Type": content_type, "Accept": accept}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(cluster.url + path, data=data, method=method, headers=headers)
    context = ssl.create_default_context(cafile=str(tls.credentials().ca))
    try:
        with urllib.request.urlopen(req, context=context, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null"), resp.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null"), err.headers
