"""The load scenario's verdict: every answer checked against the truths taken when each container
started, the errors that are not errors (pods being created or removed, the runtime outage), the
latency and outage figures, and the targets met or missed."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from nsinspect.proto import agent_pb2 as pb
from testbed.bench.measure import percentile
from testbed.reliability.agentstate import describe
from testbed.reliability.clients import CHURN_NS, Answer, Plan
from testbed.reliability.truth import Truth

# Answers a pod that is being created or removed may get: not errors.
PASSING = {"NOT_FOUND", "FAILED_PRECONDITION"}


@dataclass
class Outage:
    killed: float = 0.0  # time.monotonic() once containerd's process is gone
    restarting: float = 0.0  # when it is started again: until then nothing can answer for it
    back: float = 0.0  # containerd answering again


# -- checking and reporting ------------------------------------------------------------------------
@dataclass
class Report:
    plan: Plan
    answers: list[Answer]
    probe: list[tuple[float, float, str, int]]
    outage: Outage
    truths: dict[str, Truth]
    usage: tuple[dict[str, float], dict[str, float]]  # the agent's, before and after (agentstate.usage)
    churn: dict[str, float]
    node: dict[str, int]
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)

    def in_outage(self, a: Answer) -> bool:
        return bool(self.outage.killed) and self.outage.killed - 1 <= a.began <= self.outage.back + 5

    def errors(self) -> list[Answer]:
        """Answers that are neither OK nor what a churning pod or the outage may get."""
        bad = []
        for a in self.answers:
            if a.code == "OK":
                continue
            if a.pod.startswith(CHURN_NS + "/") and a.code in PASSING:
                continue
            if a.code == "UNAVAILABLE" and self.in_outage(a):
                continue
            bad.append(a)
        return bad

    def misattributed(self) -> tuple[int, int, list[str]]:
        """(checked, unknown, wrong): every container an Inspect answer read, against its truth."""
        checked = unknown = 0
        wrong = []
        for a in self.answers:
            for cid, pid, ticks, namespaces in a.read:
                truth = self.truths.get(cid)
                if truth is None:
                    unknown += 1
                    continue
                checked += 1
                mismatch = [t for t, ino in namespaces if truth.namespaces.get(t) != ino]
                if (pid, ticks) != (truth.pid, truth.start_ticks) or mismatch:
                    wrong.append(f"{a.pod} {cid[:12]}: answered pid {pid}@{ticks} {mismatch}, truth "
                                 f"{truth.pid}@{truth.start_ticks}")
        listed_wrong = sum(a.listed[1] for a in self.answers)
        if listed_wrong:
            wrong.append(f"{listed_wrong} listed processes were not in the pod's cgroups")
        return checked, unknown, wrong

    def outage_figures(self) -> dict[str, float]:
        """When the probe first got an answer after the kill (fallback or UNAVAILABLE), its slowest
        call in the outage, and when CRI answered again for good after containerd was back."""
        if not self.outage.killed:
            return {}
        down = (self.outage.killed, self.outage.restarting)  # nothing could answer for containerd then
        during = [s for s in self.probe if down[0] <= s[0] and s[0] + s[1] / 1000 <= down[1]]
        first = min((s[0] + s[1] / 1000 for s in during), default=float("nan"))
        after = [s for s in self.probe if s[0] >= self.outage.back]
        recovered = float("nan")
        for i, s in enumerate(after):
            if all(x[2] == "OK" and x[3] == pb.SOURCE_CRI for x in after[i:]):
                recovered = s[0] + s[1] / 1000 - self.outage.back
                break
        return {"first answer after the kill (s)": first - self.outage.killed,
                "slowest probe call while down (ms)": max((s[1] for s in during), default=float("nan")),
                "probe answers while down": len(during),
                "from /proc while down": sum(1 for s in during if s[3] == pb.SOURCE_PROC),
                "UNAVAILABLE while down": sum(1 for s in during if s[2] == "UNAVAILABLE"),
                "CRI again after containerd's return (s)": recovered}

    def latency(self) -> dict[str, tuple[int, int, float, float]]:
        """Per RPC: calls, errors, p50 and p99 (ms) of its OK answers."""
        by: dict[str, list[float]] = defaultdict(list)
        errors = Counter(a.rpc for a in self.errors())
        calls = Counter(a.rpc for a in self.answers)
        for a in self.answers:
            if a.code == "OK":
                by[a.rpc].append(a.ms)
        return {rpc: (calls[rpc], errors[rpc], percentile(by[rpc], 50), percentile(by[rpc], 99)) for rpc in calls}

    def targets(self) -> list[tuple[str, float, str, bool]]:
        """(what, figure, target, met) for each of the issue's targets."""
        before, after = self.usage
        inspect_p99 = self.latency().get("Inspect", (0, 0, 0.0, 0.0))[3]
        rows: list[tuple[str, float, str, bool]] = [("errors", len(self.errors()), "0", not self.errors()),
                ("namespaces attributed to the wrong process", len(self.misattributed()[2]), "0",
                 not self.misattributed()[2])]
        if self.plan.think:  # clients that wait for answers and ask at once measure the queue they make
            rows.append(("Inspect p99 (ms)", inspect_p99, "<= 50", inspect_p99 <= 50))
        rows += [
                ("agent RSS growth (MiB)", after["rss_mib"] - before["rss_mib"], "<= 20",
                 after["rss_mib"] - before["rss_mib"] <= 20),
                 ("agent fd growth", after["fds"] - before["fds"], "0", after["fds"] <= before["fds"])]
        if self.outage.killed:
            figures = self.outage_figures()
            first, back = figures["first answer after the kill (s)"], figures["CRI again after containerd's return (s)"]
            rows += [("first answer after containerd died (s)", first, "<= 1", first <= 1),
                     ("CRI answers again after containerd's return (s)", back, "<= 5", back <= 5)]
        return rows

    def ok(self) -> bool:
        return all(met for *_, met in self.targets())

    def text(self) -> str:
        pace = (f"each waiting {self.plan.think:g} s (0.5-1.5x) between calls" if self.plan.think else
                "each asking again as soon as answered: the agent saturated, latency = clients / throughput")
        lines = [f"load: {self.plan.clients} clients x {self.plan.calls} calls, {pace}",
                 f"load: {len(self.answers)} calls in {self.seconds:.1f} s "
                 f"({len(self.answers) / self.seconds:.0f} calls/s) on {self.node['processes']} processes and "
                 f"{self.node['pods']} lab pods",
                 f"{'rpc':<15}{'calls':>7}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}"]
        for rpc, (calls, errors, p50, p99) in sorted(self.latency().items()):
            lines.append(f"{rpc:<15}{calls:>7}{errors:>8}{p50:>9.1f}{p99:>9.1f}")
        codes = Counter(a.code for a in self.answers)
        lines.append("answers by code: " + ", ".join(f"{c} {n}" for c, n in codes.most_common()))
        for a in self.errors()[:5]:
            lines.append(f"  error: {a.rpc} {a.pod} {a.code} {a.detail}")
        checked, unknown, wrong = self.misattributed()
        lines.append(f"checked against independent reads: {checked} container answers, "
                     f"{sum(a.listed[0] for a in self.answers)} listed processes; wrong: {len(wrong)}"
                     f" (unchecked: {unknown} answers for containers without a truth, "
                     f"{sum(a.listed[2] for a in self.answers)} processes gone before the check)")
        lines.extend(f"  WRONG: {w}" for w in wrong[:5])
        lines.append("agent before -> after: " + describe(*self.usage))
        cpu = self.usage[1]["cpu_s"] - self.usage[0]["cpu_s"]
        lines.append(f"agent CPU: {cpu:.1f} s for {len(self.answers)} calls ({cpu / self.seconds * 100:.0f}% of one "
                     f"CPU; {cpu / max(len(self.answers), 1) * 1000:.1f} ms a call)")
        lines.append("churn: " + ", ".join(f"{k} {v:g}" for k, v in self.churn.items()))
        for k, v in self.outage_figures().items():
            lines.append(f"outage: {k}: {v:.3f}" if isinstance(v, float) else f"outage: {k}: {v}")
        for k, v in self.metrics.items():
            lines.append(f"metrics: {k}: {v:g}")
        lines.append("targets:")
        lines.extend(f"  {what:<50}{figure:>10.3g}  {target:<6} {'met' if met else 'MISSED'}"
                     for what, figure, target, met in self.targets())
        return "\n".join(lines)
