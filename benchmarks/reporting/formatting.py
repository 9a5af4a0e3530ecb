"""How numbers are written in the report: mean ± std over seeds, signed differences, binomial standard
errors."""

from __future__ import annotations

import math
import statistics


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    m, s = mean_std(vals)
    return f"{m:.2f} ± {s:.2f}" if len(vals) > 1 else f"{m:.2f}"


def fmt_delta(values: list[float]) -> str:
    m, sd = mean_std(values)
    m = round(m, 2) + 0.0  # no "-0.00" for a float difference of equal numbers
    return f"{m:+.2f} ± {sd:.2f}" if len(values) > 1 else f"{m:+.2f}"


def binomial_se(percent: float, n: int) -> float:
    """sqrt(p(1 − p)/n), in points, for a proportion given in percent."""
    q = min(max(percent / 100, 0.0), 1.0)
    return 100 * math.sqrt(q * (1 - q) / n)


def diag_cell(values: list[float | None], pattern: str) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    m, sd = mean_std(vals)
    return pattern.format(m) + (f" ± {pattern.format(sd)}" if len(vals) > 1 else "")
