"""Shared fixtures: the running lab, its canonical pods, and the rule that CI never skips.

Tests that need root or containerd skip with a reason on a developer machine that lacks them;
with CI=true the same condition is a failure, because CI must prove them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from testbed.lab import runtime
from testbed.lab.config import LabConfig
from testbed.lab.pods import CANONICAL, Lab, LabPod

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip outside CI when `condition` is false; fail in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must run this test, but {reason}", pytrace=False)
    pytest.skip(reason)


def require_root() -> None:
    require(os.geteuid() == 0, "it needs root (namespaces, containerd)")


@pytest.fixture(scope="session")
def lab_cfg() -> LabConfig:
    """The main lab, brought up if it is not (hack/test brings it up and down around the run)."""
    require_root()
    cfg = LabConfig()
    if not runtime.is_up(cfg):
        require(bool(shutil.which("containerd") or shutil.which("apt-get")),
                "containerd is not installed and apt-get cannot install it")
        runtime.up(cfg)
    return cfg


@pytest.fixture(scope="session")
def lab(lab_cfg: LabConfig) -> Iterator[Lab]:
    with Lab(lab_cfg) as session:
        yield session


@pytest.fixture(scope="session")
def canonical(lab: Lab) -> dict[str, LabPod]:
    """The canonical pods of `hack/lab pods`, by name."""
    lab.ensure_canonical(lambda _: None)
    names = {spec.name for spec in CANONICAL}  # other tests' pods may live in "default" too
    return {p.name: p for p in lab.pods() if p.spec.namespace == "default" and p.name in names}


# The stand-in Kubernetes cluster's fixtures: testbed/cluster/fixtures.py.
from testbed.cluster.fixtures import api_cluster, cluster, k8s, kubeconfig, user_client  # noqa: E402, F401
