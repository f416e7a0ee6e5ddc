"""Report sentences that follow the numbers: a tie is a tie, noise is noise.

One rule for the demo and the study. A difference ``a - b`` is judged on its value rounded to the
decimals the report prints, and on its 95% interval (also rounded): rounded to zero it is a tie;
an interval that includes zero means no difference outside the noise; an interval that is not
known (one run, one seed) means no verdict. Only a difference whose interval lies wholly on the
good side is called an improvement, whichever way the numbers are formatted elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

__all__ = ["OUTCOMES", "Estimate", "Verdict", "judge", "verdict"]

OUTCOMES = ("better", "worse", "tie", "within_noise", "no_estimate")


def judge(diff: float, lo: float, hi: float, decimals: int = 2,
          higher_is_better: bool = True) -> str:
    """The outcome of a difference ``a - b`` with its interval [lo, hi]: one of ``OUTCOMES``."""
    if round(diff, decimals) == 0:
        return "tie"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no_estimate"
    if round(lo, decimals) <= 0 <= round(hi, decimals):
        return "within_noise"
    return "better" if (diff > 0) == higher_is_better else "worse"


class Estimate(Protocol):
    """A difference with its interval (``statistics.PairedDifference`` is one)."""
    mean: float
    lo: float
    hi: float


@dataclass(frozen=True)
class Verdict:
    outcome: str
    sentence: str


def _fmt(x: float, decimals: int) -> str:
    value = round(x, decimals)
    return f"{0.0 if value == 0 else value:+.{decimals}f}"  # no "-0.00"


def verdict(a: str, b: str, metric: str, estimate: Estimate, *, tests: str = "",
            unit: str = "points", decimals: int = 2, higher_is_better: bool = True) -> Verdict:
    """Judge ``a - b`` on ``metric`` (its ``estimate``: mean and interval) and say it in one
    markdown sentence.

    ``tests`` is appended to the numbers (e.g. "paired t-test p=0.012"). Wording: "improved" /
    "lowered" for a metric where higher is better, "reduced" / "increased" where lower is.
    """
    diff, lo, hi = estimate.mean, estimate.lo, estimate.hi
    outcome = judge(diff, lo, hi, decimals, higher_is_better)
    d = f"{_fmt(diff, decimals)} {unit}"
    known = math.isfinite(lo) and math.isfinite(hi)
    ci = f"95% CI {_fmt(lo, decimals)} to {_fmt(hi, decimals)}" if known else "no interval"
    numbers = ", ".join(s for s in (d, ci, tests) if s)
    if outcome == "better":
        verb = "improved" if higher_is_better else "reduced"
        text = f"**{a} {verb} {metric}** compared with {b} ({numbers})."
    elif outcome == "worse":
        verb = "lowered" if higher_is_better else "increased"
        text = f"**{a} {verb} {metric}** compared with {b} ({numbers})."
    elif outcome == "tie":
        text = f"**{a} and {b} tied on {metric}** ({numbers})."
    elif outcome == "within_noise":
        text = f"**No difference outside the noise between {a} and {b} on {metric}** " \
               f"({numbers}; the interval includes zero)."
    else:
        text = f"**No verdict on {metric} for {a} against {b}**: {d} from a single run, which " \
               f"gives no estimate of the noise."
    return Verdict(outcome, text)
