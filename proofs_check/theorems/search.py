"""``search``: property-test a registered claim, measure its power and vacuity, and give a verdict.

Verdict levels (:attr:`SearchReport.verdict`):

* ``"held"`` — no counterexample among the decided draws, and every false variant measured was
  caught on at least ``POWER_FLOOR`` (20 %) of its draws; shown as ``"held (vacuous on k/n)"`` when
  the bound was trivial on ``k`` of the ``n`` decided draws;
* ``"finding"`` — a reconstructed claim failed (``"FAILED"`` for an exact or cited one: a bug);
* ``"inconclusive"`` — no draw decided the claim (ties, undecidable ranks, statistical tests
  significant neither way);
* ``"low power"`` — no counterexample, but some false claim (a flipped, bound×k or kernel variant)
  was caught on fewer than 20 % of draws: the check could not have told the claim from that variant.
  Dropped-assumption variants are reported ("needed on k/n draws") but do not decide the verdict: a
  claim may well hold without an assumption that it does not need.

The failure rate comes with a Clopper–Pearson interval (``scipy.stats.binomtest(...).proportion_ci
(method="exact")``, 95 %), and so does every catch rate.

False variants (:class:`VariantPower`), by kind:

* ``flipped`` — the negated conclusion, judged on the theorem's own draws (caught where the claim holds);
* ``bound×k`` — the bound made ``k`` times stronger (:meth:`Theorem.judge` with ``strength=k``), on the
  same draws, without recomputation;
* ``assumption`` — one assumption dropped: instances from the registered violating strategy
  (:func:`.registry.violating_instances`); caught where the conclusion fails *or becomes vacuous*
  (without the assumption the claim says nothing there);
* ``kernel`` — the claim with the wrong kernel (:meth:`Theorem.kernel_variants`), on the theorem's draws.

The first two cost nothing and always run; the last two draw new instances and run with ``power=True``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from .base import CheckResult, Theorem, jsonable
from .registry import entry, instances, violating_instances

__all__ = ["SearchReport", "VariantPower", "search", "clopper_pearson", "POWER_FLOOR"]

POWER_FLOOR = 0.2
POWER_KINDS = ("flipped", "bound", "kernel")  # the variants that decide "low power"; "assumption" ones
# say whether an assumption is needed (a claim may hold without an unnecessary assumption)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Exact (Clopper–Pearson) interval for a binomial proportion ``k/n``; ``None`` when ``n = 0``."""
    if n <= 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class VariantPower:
    """How often one deliberately false variant was caught: ``caught`` of ``drawn`` decided draws
    (``caught_vacuous`` of them because the claim became vacuous), with a 95 % Clopper–Pearson interval."""

    name: str
    kind: str
    description: str
    drawn: int
    caught: int
    caught_vacuous: int = 0
    excluded: int = 0

    @property
    def rate(self) -> float:
        return self.caught / self.drawn if self.drawn else math.nan

    @property
    def interval(self) -> tuple[float, float] | None:
        return clopper_pearson(self.caught, self.drawn)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "drawn": self.drawn,
            "caught": self.caught,
            "caught_vacuous": self.caught_vacuous,
            "excluded": self.excluded,
            "rate": None if not self.drawn else self.rate,
            "interval_95": self.interval,
        }

    def __repr__(self) -> str:
        return f"VariantPower({self.name!r}: caught {self.caught}/{self.drawn})"


@dataclass(frozen=True)
class SearchReport:
    """Outcome of :func:`search` for one theorem.

    ``tried`` distinct instances were drawn (``repeats`` further draws repeated one of them and are
    counted once); ``skipped`` failed an assumption checked after the run (e.g. the
    region of [S24] Thm 1); ``excluded`` were ties or undecidable; ``passed + failed`` are the decided
    draws, ``vacuous`` of the passes held trivially. ``worst_margin`` is the smallest margin seen
    among the decided draws and ``worst_instance`` where. ``counterexample`` is the minimal failing
    instance Hypothesis shrank to (``shrunk=False`` if shrinking was off or stopped by its budget
    before it began); ``failures`` holds it first, then every failing draw. ``power`` lists the false
    variants and how often each was caught; ``sample`` keeps the first three relevant results.
    """

    theorem_id: str
    citation: str
    reconstructed: bool
    exact: bool
    tried: int
    passed: int
    failed: int
    skipped: int
    excluded: int
    vacuous: int
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
    power: tuple[VariantPower, ...] = ()
    power_run: bool = False
    repeats: int = 0
    bias: str | None = None
    exclusion_reasons: tuple[str, ...] = ()
    failures: tuple[CheckResult, ...] = field(default=(), repr=False, compare=False)
    sample: tuple[CheckResult, ...] = field(default=(), repr=False, compare=False)

    @property
    def decided(self) -> int:
        return self.passed + self.failed

    @property
    def failure_rate(self) -> float:
        return self.failed / self.decided if self.decided else math.nan

    @property
    def failure_interval(self) -> tuple[float, float] | None:
        return clopper_pearson(self.failed, self.decided)

    @property
    def min_catch_rate(self) -> float | None:
        """The smallest catch rate among the false claims (flipped, bound×k, kernel variants)."""
        rates = [v.rate for v in self.power if v.drawn and v.kind in POWER_KINDS]
        return min(rates) if rates else None

    @property
    def weak_variants(self) -> tuple[str, ...]:
        """False claims (flipped, bound×k, kernel) caught on fewer than ``POWER_FLOOR`` of their draws."""
        return tuple(v.name for v in self.power if v.drawn and v.kind in POWER_KINDS and v.rate < POWER_FLOOR)

    @property
    def level(self) -> str:
        """``held`` / ``finding`` / ``FAILED`` / ``inconclusive`` / ``low power`` (module docstring)."""
        if self.failed:
            return "finding" if self.reconstructed else "FAILED"
        if self.decided == 0:
            return "inconclusive"
        if self.weak_variants:
            return "low power"
        return "held"

    @property
    def verdict(self) -> str:
        lv = self.level
        if lv == "held" and self.vacuous:
            return f"held (vacuous on {self.vacuous}/{self.decided})"
        return lv

    @property
    def finding(self) -> str | None:
        if self.failed == 0 or self.level == "FAILED":
            return None
        variant = self.variant_that_holds or "none known"
        return (
            f"{self.theorem_id} (reconstructed) fails on {self.failed}/{self.decided} decided "
            f"instances; the variant that holds: {variant}"
        )

    def to_dict(self) -> dict[str, Any]:
        skip = {"failures", "sample"}
        out = {k: jsonable(getattr(self, k)) for k in self.__dataclass_fields__ if k not in skip}
        out.update(
            verdict=self.verdict,
            level=self.level,
            finding=self.finding,
            decided=self.decided,
            failure_rate=None if not self.decided else self.failure_rate,
            failure_interval_95=self.failure_interval,
            min_catch_rate=self.min_catch_rate,
            weak_variants=list(self.weak_variants),
        )
        return out

    def __repr__(self) -> str:
        s = (
            f"SearchReport({self.theorem_id!r}: {self.verdict}, tried={self.tried}, passed={self.passed}, "
            f"failed={self.failed}, excluded={self.excluded}, worst_margin={self.worst_margin:.4g}"
        )
        if self.counterexample is not None:
            s += f", counterexample={self.counterexample!r}"
        return s + ")"


def _settings(n: int, phases: list, database: Any):
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=n,
        phases=phases,
        database=database,
        derandomize=False,
        deadline=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )


def _collect(thm: Theorem, strategy: Any, n: int, seed: int, database: Any, run) -> list[CheckResult]:
    from hypothesis import Phase, given
    from hypothesis import seed as hyp_seed

    results: list[CheckResult] = []
    phases = [Phase.reuse, Phase.generate] if database is not None else [Phase.generate]

    @hyp_seed(seed)
    @_settings(n, phases, database)
    @given(strategy)
    def collect(inst: Any) -> None:
        results.append(run(inst))

    collect()
    return results


def _distinct(results: list[CheckResult]) -> tuple[list[CheckResult], int]:
    """The results of distinct instances, first draw kept, and how many repeats were dropped.

    Hypothesis redraws the same instance now and then (the minimal one especially: 12 of 200 draws of
    ``I25.interlacing`` at seed 0); a repeat is no new evidence, so counts and intervals use each instance
    once. Unhashable instances are all kept.
    """
    seen: set[Any] = set()
    out: list[CheckResult] = []
    for r in results:
        try:
            if r.instance in seen:
                continue
            seen.add(r.instance)
        except TypeError:
            pass
        out.append(r)
    return out, len(results) - len(out)


def _free_variants(thm: Theorem, decided: list[CheckResult]) -> list[VariantPower]:
    out = [
        VariantPower(
            f"{thm.id}~flipped",
            "flipped",
            "the negated conclusion",
            len(decided),
            sum(r.holds for r in decided),
        )
    ]
    for k in thm.strengths:
        judged = [thm.judge(r.quantities, k) for r in decided]
        kept = [c for c in judged if c.excluded is None]
        out.append(
            VariantPower(
                f"{thm.id}~bound×{k:g}",
                "bound",
                f"the bound made {k:g} times stronger",
                len(kept),
                sum(not c.holds for c in kept),
                excluded=len(judged) - len(kept),
            )
        )
    return out


def _drawn_variant(name: str, kind: str, desc: str, results: list[CheckResult]) -> VariantPower:
    kept = [r for r in results if r.excluded is None]
    caught = [r for r in kept if not r.holds or r.vacuous]
    vac = sum(1 for r in caught if r.holds)
    return VariantPower(name, kind, desc, len(kept), len(caught), vac, len(results) - len(kept))


def _power_variants(thm: Theorem, theorem_id: str, n: int, seed: int, draws: list[Any]) -> list[VariantPower]:
    out = []
    e = entry(theorem_id)
    for name in e.violations:
        res, _ = _distinct(_collect(thm, violating_instances(theorem_id, name), n, seed, None, thm.check))
        # a violating draw may still fail a posterior assumption: only those violating exactly this one count
        res = [r for r in res if all(a.holds for a in r.assumptions if a.name != name)]
        out.append(
            _drawn_variant(f"{thm.id}~without[{name}]", "assumption", f"assumption dropped: {name}", res)
        )
    for vname, desc, wrong in thm.kernel_variants():
        res = [wrong.check(inst) for inst in draws[:n]]
        out.append(_drawn_variant(f"{thm.id}~{vname}", "kernel", desc, res))
    return out


def _validate(max_examples: Any, shrink_budget: Any, seed: Any, power_examples: Any) -> None:
    for name, v in (("max_examples", max_examples), ("shrink_budget", shrink_budget)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if power_examples is not None and (
        isinstance(power_examples, bool) or not isinstance(power_examples, int) or power_examples < 1
    ):
        raise ValueError(f"power_examples must be a positive integer or None, got {power_examples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _shrink(
    theorem_id: str, strategy: Any, n: int, seed: int, database: Any, cache: dict, run, budget: int
) -> tuple[CheckResult | None, int]:
    """Rerun the search with an assertion so that Hypothesis shrinks the first failure; at most ``budget``
    new instances are evaluated (later candidates count as passing, which ends the shrink). Returns the
    last (smallest) failing result and the number of new evaluations."""
    from hypothesis import Phase, given
    from hypothesis import seed as hyp_seed

    state: dict[str, Any] = {"last": None, "new": 0}

    def budgeted(inst: Any) -> CheckResult | None:
        if inst in cache:
            return cache[inst]
        if state["new"] >= budget:
            return None
        state["new"] += 1
        return run(inst)

    phases = ([Phase.reuse] if database is not None else []) + [Phase.generate, Phase.shrink]
    # unseeded (database) runs draw afresh and may miss a failure the seeded search found within n
    # draws (≈ 1 % of runs at a 37 % failure rate and n = 10): they may draw up to ``budget`` more,
    # which costs nothing beyond the same budget of new evaluations
    draws = n if database is None else n + budget

    @_settings(draws, phases, database)
    @given(strategy)
    def falsify(inst: Any) -> None:
        r = budgeted(inst)
        if r is not None and r.counterexample:
            state["last"] = r
            raise AssertionError(f"{theorem_id} fails on {inst!r}")

    if database is None:  # Hypothesis saves nothing from a seeded run: with a database, shrink unseeded
        falsify = hyp_seed(seed)(falsify)
    try:
        falsify()
    except Exception:  # noqa: BLE001 - the falsifying example is what we want
        pass
    return state["last"], int(state["new"])


def search(
    theorem_id: str,
    *,
    max_examples: int = 200,
    seed: int = 0,
    shrink: bool = True,
    shrink_budget: int = 150,
    strategy: Any = None,
    power: bool = False,
    power_examples: int | None = None,
    database: Any = None,
) -> SearchReport:
    """Property-test ``theorem_id`` on Hypothesis-drawn instances, measure power, shrink a failure.

    Phase 1 draws up to ``min(max_examples, theorem.max_examples)`` instances from ``strategy``
    (default: the registered one, :func:`.registry.instances`) with ``seed`` and records every
    :class:`CheckResult` without stopping at a failure, each distinct instance once (a redrawn instance
    is a ``repeat``, no new evidence); the free false variants (flipped, bound×k) are
    judged on the same draws. With ``power=True`` each registered violating strategy and each kernel
    variant is drawn ``power_examples`` times (default: the same count, at most 50). Phase 2, if
    anything failed, reruns the seeded search with an assertion so that Hypothesis shrinks the first
    failure; at most ``shrink_budget`` *new* instances are evaluated while shrinking. ``database``: a
    Hypothesis example database (e.g. ``DirectoryBasedExampleDatabase(dir)``) that stores the shrunk
    failure and replays stored ones first; ``None`` (default) keeps none. Hypothesis saves nothing
    from a seeded run, so with a database the shrink phase is unseeded (the counts stay seeded).
    """

    _validate(max_examples, shrink_budget, seed, power_examples)
    e = entry(theorem_id)
    thm = e.theorem
    if strategy is None:
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

    results, repeats = _distinct(_collect(thm, strategy, n, seed, database, run))
    decided = [r for r in results if r.decided]
    failed = [r for r in decided if not r.holds]
    worst = min(decided, key=lambda r: r.margin, default=None)
    variants = _free_variants(thm, decided)
    if power:
        pn = power_examples or min(n, 50)
        variants += _power_variants(
            thm,
            theorem_id,
            min(pn, thm.max_examples or pn),
            seed,
            [r.instance for r in results if r.assumptions_hold],
        )

    counter: CheckResult | None = failed[0] if failed else None
    shrunk, calls = False, 0
    if failed and shrink:
        last, calls = _shrink(theorem_id, strategy, n, seed, database, cache, run, shrink_budget)
        if last is not None:
            counter, shrunk = last, True

    excluded = [r for r in results if r.assumptions_hold and r.excluded is not None]
    return SearchReport(
        theorem_id=thm.id,
        citation=thm.citation,
        reconstructed=thm.reconstructed,
        exact=thm.exact,
        tried=len(results),
        repeats=repeats,
        passed=len(decided) - len(failed),
        failed=len(failed),
        skipped=sum(not r.assumptions_hold for r in results),
        excluded=len(excluded),
        vacuous=sum(1 for r in decided if r.holds and r.vacuous),
        worst_margin=math.nan if worst is None else worst.margin,
        worst_instance=None if worst is None else worst.instance,
        counterexample=None if counter is None else counter.instance,
        counterexample_margin=None if counter is None else counter.margin,
        shrunk=shrunk,
        shrink_calls=calls,
        variant_that_holds=thm.variant_that_holds,
        statistical_test=thm.statistical_test,
        margin_scale=thm.margin_scale,
        max_examples=n,
        seed=seed,
        seconds=time.perf_counter() - t0,
        power=tuple(variants),
        power_run=bool(power),
        bias=e.bias,
        exclusion_reasons=tuple(sorted({r.excluded for r in excluded})),
        failures=tuple(([counter] if counter is not None else []) + [r for r in failed if r is not counter]),
        sample=tuple(r for r in results if r.assumptions_hold)[:3],
    )
