"""The benchmark suite runs whole on a tiny generated node and reports every row (a smoke test: no
timing thresholds here; speed is measured by `hack/bench`, never by timed tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from testbed.bench.__main__ import main
from testbed.lab.config import LabConfig
from tests.conftest import require_root

TINY = ["--processes", "50", "--pods", "3", "--pod-processes", "20", "--runs", "10", "--ps-runs", "3",
        "--exec-runs", "5", "--mib", "8", "--cli-runs", "2"]
ROWS = ["Inspect, agent-side, median", "Inspect, agent-side, p99", "Inspect, uncached CRI, median",
        "Inspect, /proc fallback (CRI down), median", "Inspect over gRPC (unix socket), median",
        "Node map (all pods, all types), median", "ListProcesses, ", "Exec true via agent (fork server), median",
        "Exec true via agent (helper spawned per session), median", "Exec stdout throughput, dd bs=1M",
        "Exec stdout throughput, head -c", "CLI start-up: nsinspect --help", "CLI: nsinspect ns targeted"]


def run(argv: list[str], tmp_path: Path) -> tuple[list[dict[str, Any]], dict[str, str], str]:
    out, doc = tmp_path / "rows.json", tmp_path / "bench.md"
    assert main([*argv, "--json", str(out), "--markdown", str(doc)]) == 0
    report = json.loads(out.read_text())
    return report["rows"], report["machine"], doc.read_text()


def check(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if row["ours"] is None:
            assert row["note"], row
            continue
        assert row["ours"] > 0, row
        if row["baseline"] is not None:
            assert row["baseline"] > 0, row
            assert row["ratio"] == pytest.approx(row["ours"] / row["baseline"]), row
            expected = row["ratio"] if row["unit"] == "MiB/s" else 1 / row["ratio"]
            assert row["speedup"] == pytest.approx(expected), row


@pytest.mark.timeout(180)
def test_whole_suite_on_a_tiny_generated_node(lab_cfg: LabConfig, tmp_path: Path) -> None:
    rows, machine, doc = run(TINY, tmp_path)
    for name in ROWS:
        found = [r for r in rows if r["what"].startswith(name)]
        assert found and all(r["ours"] is not None and r["baseline"] for r in found), (name, rows)
        assert all(r["what"].strip().replace("|", "\\|") in doc for r in found)
    check(rows)
    assert {"CPU", "kernel", "cgroup mode", "runtime (CRI endpoint)", "processes during the run"} <= set(machine)
    assert "## Machine" in doc


@pytest.mark.timeout(120)
def test_real_node_mode_against_the_labs_runtime(lab_cfg: LabConfig, canonical: object, tmp_path: Path) -> None:
    """`--node` as on a real node: the lab's containerd taken for the node's, an existing pod, nothing generated."""
    require_root()
    rows, machine, _ = run(["--node", "--cri-endpoint", lab_cfg.endpoint, "--pod", "default/plain",
                            "--runtime-state-dir", str(lab_cfg.state), *TINY], tmp_path)
    check(rows)
    assert machine["node"].startswith("a real node")
    teardown = [r for r in rows if r["what"].startswith("Exec cancel")]
    assert teardown and teardown[0]["ours"] is None and "needs the lab" in teardown[0]["note"]
    assert all(r["ours"] is not None for r in rows if r not in teardown)
