"""The reliability scenarios at CI's sizes (`hack/reliability` runs the long ones): correctness under
load, churn with PIDs reused and a containerd outage; agent restarts during sessions; no leaks
after many sessions, half of them cut off. Latency targets are the long run's to report, not
asserted here (speed is measured by benchmarks, not by tests)."""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import pytest

from testbed.lab.config import LabConfig
from testbed.lab.pods import LabPod
from testbed.reliability import clients, leaks, load, restart
from testbed.reliability.__main__ import SHORT_LOAD, SHORT_SESSIONS
from tests.conftest import require_root

pytestmark = pytest.mark.lab


def test_load_with_churn_and_a_runtime_outage(tmp_path: Path) -> None:
    require_root()
    report = load.run_load(SHORT_LOAD, tmp_path)
    print(report.text())
    assert len(report.answers) == SHORT_LOAD.clients * SHORT_LOAD.calls
    assert report.errors() == []
    checked, _, wrong = report.misattributed()
    assert wrong == [] and checked > len(report.answers)  # most answers name several containers
    assert sum(a.listed[0] for a in report.answers) > 0
    assert report.churn["pid wraps"] >= 1, "PIDs were reused during the load"
    before, after = report.usage
    assert after["fds"] <= before["fds"] and after["rss_mib"] - before["rss_mib"] <= 20
    figures = report.outage_figures()
    assert figures["probe answers while down"] > 0, "the agent kept answering while containerd was dead"
    assert figures["from /proc while down"] + figures["UNAVAILABLE while down"] == figures["probe answers while down"]
    assert figures["from /proc while down"] > 0
    assert figures["CRI again after containerd's return (s)"] == figures["CRI again after containerd's return (s)"]
    # The agent counted what the clients saw (the probe asked besides them).
    ok = {rpc: sum(1 for a in report.answers if a.rpc == rpc and a.code == "OK") for rpc in clients.CALLS}
    probe_ok = sum(1 for s in report.probe if s[2] == "OK")
    assert report.metrics["rpc Inspect OK"] == ok["Inspect"] + probe_ok
    assert report.metrics["rpc ListProcesses OK"] == ok["ListProcesses"]
    assert report.metrics["rpc Exec OK"] == ok["Exec"]
    assert report.metrics["resolutions proc"] > 0 and report.metrics["exec sessions active after"] == 0


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_agent_restart_during_sessions(how: signal.Signals, lab_cfg: LabConfig, canonical: dict[str, LabPod],
                                       tmp_path: Path) -> None:
    nsinspect = shutil.which("nsinspect") or f"{sys.prefix}/bin/nsinspect"
    result = restart.restart_during_sessions(lab_cfg, "plain", how, 3, tmp_path, nsinspect)
    print(result.text())
    assert result.running_before == 6
    assert all(e.startswith("UNAVAILABLE") for e in result.client_errors), result.client_errors
    assert result.cli_exit == 1 and result.cli_stderr.startswith("error: lost ")
    assert len(result.cli_stderr.strip().splitlines()) == 1
    if how == signal.SIGTERM:
        assert result.left_between == 0  # a stopping agent ends its sessions
    assert result.left_after == 0 and result.works_again


def test_no_leaks_after_many_sessions_half_cut_off(lab_cfg: LabConfig, canonical: dict[str, LabPod],
                                                   tmp_path: Path) -> None:
    found = leaks.leak_check(lab_cfg, "plain", SHORT_SESSIONS, tmp_path)
    print(found.text())
    assert found.failed == []
    assert found.left == 0 and found.zombies == []
    for what in ("fds", "threads", "children"):
        assert found.after[what] <= found.before[what], what
