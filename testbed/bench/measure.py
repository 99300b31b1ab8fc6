"""How every benchmark times things: one helper for latencies, one for wall and CPU time, percentiles."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timings(fn: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    """Milliseconds of `runs` calls of `fn`, after `warmup` calls that are not counted."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        out.append((time.perf_counter() - began) * 1000)
    return out


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    return statistics.median(timings(fn, runs, warmup))


def wall_and_cpu(fn: Callable[[], object], runs: int, warmup: int = 2) -> tuple[float, float]:
    """Median wall and median CPU milliseconds (this thread's CPU time: what the call costs, whatever
    else the node's CPUs are busy with)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        began, began_cpu = time.perf_counter(), time.thread_time()
        fn()
        cpu.append((time.thread_time() - began_cpu) * 1000)
        wall.append((time.perf_counter() - began) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def percentile(values: list[float], pct: int) -> float:
    """The nearest-rank percentile (p50, p90, p99) of `values`; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, len(ordered) * pct // 100)]
