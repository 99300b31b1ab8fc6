"""The one table every benchmark reports into: our figure, the baseline measured in the same run, the
ratio, the target and whether it is met. Rendered as text for the terminal and as Markdown for docs/."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

HIGHER_IS_BETTER = {"MiB/s"}


@dataclass(frozen=True)
class Row:
    """One figure. `ours` None: skipped (the note says why). `unit` "ms" is better lower, "MiB/s" higher."""

    what: str
    ours: float | None
    baseline_name: str = ""
    baseline: float | None = None
    unit: str = "ms"
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """ours / baseline, in the row's unit."""
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline

    @property
    def speedup(self) -> float | None:
        """How many times better ours is than the baseline (> 1: better, < 1: worse)."""
        ratio = self.ratio
        if not ratio:
            return None
        return ratio if self.unit in HIGHER_IS_BETTER else 1 / ratio


def skipped(what: str, why: str, baseline_name: str = "", target: str = "") -> Row:
    return Row(what, None, baseline_name, target=target, note=why)


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def figure(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{number(value)} {unit}"


def ratio_text(row: Row) -> str:
    speedup = row.speedup
    if speedup is None:
        return "-"
    return f"{number(speedup)}x faster" if speedup >= 1 else f"{number(1 / speedup)}x slower"


def met_text(row: Row) -> str:
    if row.ours is None:
        return f"skipped: {row.note}"
    return {True: "yes", False: "NO", None: ""}[row.met]


def cells(row: Row) -> list[str]:
    return [row.what, figure(row.ours, row.unit), row.baseline_name or "-", figure(row.baseline, row.unit),
            ratio_text(row), row.target, met_text(row)]


HEADER = ["measure", "ours", "baseline", "baseline figure", "ratio", "target", "met?"]
LEGEND = ("ratio: how many times faster (or slower) ours is than the baseline measured in the same run "
          "(ms: baseline / ours; MiB/s: ours / baseline)")


def text(rows: Sequence[Row]) -> str:
    table = [HEADER, *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    right = {1, 3, 4}
    out = []
    for line in table:
        out.append("  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip())
    notes = [f"- {r.what}: {r.note}" for r in rows if r.note and r.ours is not None]
    return "\n".join([*out, LEGEND, *notes])


def markdown(rows: Sequence[Row]) -> str:
    def esc(cell: str) -> str:  # leading spaces (a sub-row) would collapse: indent with em spaces
        stripped = cell.lstrip(" ")
        return "&emsp;" * ((len(cell) - len(stripped)) // 2) + stripped.replace("|", "\\|")

    out = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(("---:" if i in {1, 3, 4} else "---")
                                                          for i in range(len(HEADER))) + "|"]
    out += ["| " + " | ".join(esc(c) for c in cells(r)) + " |" for r in rows]
    notes = [f"- {r.what}: {r.note}" for r in rows if r.note and r.ours is not None]
    return "\n".join([*out, "", LEGEND + ".", *(["", *notes] if notes else [])])
