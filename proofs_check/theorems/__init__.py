"""Theorem registry (MATH.md §5): every claim as an object, ``check`` on one instance, and
``search`` for a counterexample with Hypothesis.

>>> from proofs_check.theorems import THEOREMS, get_theorem, check
>>> thm = get_theorem("S24.thm1.rank")
>>> check("S24.thm1.rank", thm.violating_instance()).holds      # HD < Nn
False

``search(theorem_id, max_examples=200, seed=0)`` draws instances satisfying the theorem's
assumptions (:func:`proofs_check.strategies.instances`), counts how many pass and fail, and
shrinks a failure to a minimal counterexample; it returns a :class:`SearchReport`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from .base import (
    Assumption,
    AttentionConfig,
    BlockConfig,
    CheckResult,
    Conclusion,
    Theorem,
    jsonable,
)
from .h24 import THEOREMS as _H24
from .i25 import THEOREMS as _I25
from .i25 import ProbabilityInstance
from .q25 import THEOREMS as _Q25
from .q25 import FFNRateInstance
from .s24 import THEOREMS as _S24
from .s24 import RateInstance, Thm2Instance

__all__ = [
    "THEOREMS",
    "Theorem",
    "Assumption",
    "Conclusion",
    "CheckResult",
    "SearchReport",
    "AttentionConfig",
    "BlockConfig",
    "RateInstance",
    "Thm2Instance",
    "FFNRateInstance",
    "ProbabilityInstance",
    "get_theorem",
    "check",
    "search",
]

THEOREMS: dict[str, Theorem] = {t.id: t for t in (*_I25, *_S24, *_Q25, *_H24)}


def get_theorem(theorem_id: str) -> Theorem:
    """The registered theorem ``theorem_id``; an unknown id lists the known ones."""
    if not isinstance(theorem_id, str):
        raise TypeError(f"theorem_id must be a string, got {type(theorem_id).__name__}")
    if theorem_id not in THEOREMS:
        raise ValueError(f"unknown theorem id {theorem_id!r}; known: {', '.join(THEOREMS)}")
    return THEOREMS[theorem_id]


def check(theorem_id: str, instance: Any) -> CheckResult:
    """Evaluate theorem ``theorem_id``'s assumptions and conclusion on ``instance``."""
    return get_theorem(theorem_id).check(instance)


@dataclass(frozen=True)
class SearchReport:
    """Outcome of :func:`search` for one theorem.

    ``tried`` instances were drawn in the generation phase (all satisfy the assumptions;
    ``skipped`` counts any that did not); ``passed`` + ``failed`` = ``tried − skipped``.
    ``worst_margin`` is the smallest margin seen (on the theorem's ``margin_scale``) and
    ``worst_instance`` where. ``counterexample`` is the minimal failing instance Hypothesis
    shrank to (``shrunk=False`` if shrinking was off or stopped by its budget before it
    began). ``finding`` is set when a *reconstructed* claim fails: a finding, not a bug,
    naming ``variant_that_holds``.
    """

    theorem_id: str
    citation: str
    reconstructed: bool
    tried: int
    passed: int
    failed: int
    skipped: int
    worst_margin: float
    worst_instance: Any
    counterexample: Any
    counterexample_margin: float | None
    shrunk: bool
    shrink_calls: int
    variant_that_holds: str | None
    statistical_test: str | None
    margin_scale: str
    max_examples: int
    seed: int
    seconds: float

    @property
    def verdict(self) -> str:
        """``"held"``, ``"finding"`` (a reconstructed claim failed) or ``"FAILED"`` (an exact/cited one)."""
        if self.failed == 0:
            return "held"
        return "finding" if self.reconstructed else "FAILED"

    @property
    def finding(self) -> str | None:
        if self.failed == 0 or not self.reconstructed:
            return None
        variant = self.variant_that_holds or "none known"
        return (f"{self.theorem_id} (reconstructed) fails on {self.failed}/{self.tried - self.skipped} "
                f"instances; the variant that holds: {variant}")

    def to_dict(self) -> dict[str, Any]:
        out = {k: jsonable(getattr(self, k)) for k in self.__dataclass_fields__}
        out["verdict"] = self.verdict
        out["finding"] = self.finding
        return out

    def __repr__(self) -> str:
        s = (f"SearchReport({self.theorem_id!r}: {self.verdict}, tried={self.tried}, passed={self.passed}, "
             f"failed={self.failed}, worst_margin={self.worst_margin:.4g}")
        if self.counterexample is not None:
            s += f", counterexample={self.counterexample!r}"
        return s + ")"


def search(
    theorem_id: str,
    *,
    max_examples: int = 200,
    seed: int = 0,
    shrink: bool = True,
    shrink_budget: int = 150,
    strategy: Any = None,
) -> SearchReport:
    """Property-test ``theorem_id`` on Hypothesis-drawn instances and shrink a failure.

    Phase 1 draws up to ``min(max_examples, theorem.max_examples)`` instances from
    ``strategy`` (default :func:`proofs_check.strategies.instances`) with ``seed`` and records
    every :class:`CheckResult` without stopping at a failure. Phase 2, if anything failed,
    reruns the same seeded search with an assertion so that Hypothesis shrinks the first
    failure; at most ``shrink_budget`` *new* instances are evaluated while shrinking (later
    candidates count as passing, which ends the shrink). Results are cached per instance.
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hyp_seed

    thm = get_theorem(theorem_id)
    for name, v in (("max_examples", max_examples), ("shrink_budget", shrink_budget)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if strategy is None:
        from ..strategies import instances

        strategy = instances(theorem_id)
    n = min(max_examples, thm.max_examples or max_examples)
    t0 = time.perf_counter()
    cache: dict[Any, CheckResult] = {}

    def run(inst: Any) -> CheckResult:
        try:
            return cache[inst]
        except (KeyError, TypeError):
            r = thm.check(inst)
            try:
                cache[inst] = r
            except TypeError:
                pass
            return r

    common = dict(database=None, derandomize=False, deadline=None, print_blob=False,
                  suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    results: list[CheckResult] = []

    @hyp_seed(seed)
    @settings(max_examples=n, phases=[Phase.generate], **common)
    @given(strategy)
    def collect(inst: Any) -> None:
        results.append(run(inst))

    collect()
    relevant = [r for r in results if r.assumptions_hold]
    failed = [r for r in relevant if not r.holds]
    worst = min(relevant, key=lambda r: r.margin, default=None)

    counter: CheckResult | None = failed[0] if failed else None
    shrunk = False
    calls = 0
    if failed and shrink:
        state: dict[str, Any] = {"last": None, "new": 0}

        def budgeted(inst: Any) -> CheckResult | None:
            if inst in cache:
                return cache[inst]
            if state["new"] >= shrink_budget:
                return None
            state["new"] += 1
            return run(inst)

        @hyp_seed(seed)
        @settings(max_examples=n, phases=[Phase.generate, Phase.shrink], **common)
        @given(strategy)
        def falsify(inst: Any) -> None:
            r = budgeted(inst)
            if r is not None and r.assumptions_hold and not r.holds:
                state["last"] = r
                raise AssertionError(f"{theorem_id} fails on {inst!r}")

        try:
            falsify()
        except Exception:  # noqa: BLE001 - the falsifying example is what we want
            pass
        if state["last"] is not None:
            counter, shrunk = state["last"], True
        calls = int(state["new"])

    return SearchReport(
        theorem_id=thm.id, citation=thm.citation, reconstructed=thm.reconstructed, tried=len(results),
        passed=len(relevant) - len(failed), failed=len(failed), skipped=len(results) - len(relevant),
        worst_margin=math.nan if worst is None else worst.margin,
        worst_instance=None if worst is None else worst.instance,
        counterexample=None if counter is None else counter.instance,
        counterexample_margin=None if counter is None else counter.margin,
        shrunk=shrunk, shrink_calls=calls, variant_that_holds=thm.variant_that_holds,
        statistical_test=thm.statistical_test, margin_scale=thm.margin_scale, max_examples=n, seed=seed,
        seconds=time.perf_counter() - t0,
    )
