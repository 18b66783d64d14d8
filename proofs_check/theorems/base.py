"""Theorem objects: assumptions, a conclusion with a margin, and the records they return.

A :class:`Theorem` turns one claim of MATH.md §5 into functions of an *instance* (a small frozen
dataclass of sizes, scales and seeds, :mod:`proofs_check.configs`, from which the theorem builds
the model and the data deterministically, so that Hypothesis can shrink it and a counterexample
prints as a readable configuration and replays from a file):

* ``assumptions(instance) -> list[Assumption]`` — each ``(name, holds, value)``;
* ``measure(instance) -> dict`` — every quantity the claim compares (the expensive part);
* ``judge(quantities, strength=1) -> Conclusion`` — ``(holds, margin, details, vacuous,
  excluded)``. The *margin* is how far the instance is from violating the claim, on the scale the
  theorem states in ``margin_scale``; ``holds`` is ``margin >= 0`` (exact claims allow a rounding
  tolerance relative to the compared quantities' own scale, folded into the margin).
  ``strength = k`` checks the bound made ``k`` times stronger: a deliberately false variant whose
  catch rate measures the check's power (:mod:`proofs_check.theorems.power`).

:meth:`Theorem.check` runs them and returns a frozen :class:`CheckResult`.

Theorems marked ``reconstructed=True`` follow our reading of a paper whose full text we
did not have (MATH.md preamble). When one fails on an instance, that is a *finding*:
``variant_that_holds`` names the corrected statement (usually another registered id).
Statistical claims state their test and confidence level in ``statistical_test``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attncond.models import KernelUnderflowWarning

from ..configs import AttentionConfig, BlockConfig

__all__ = [
    "Assumption",
    "Conclusion",
    "CheckResult",
    "Theorem",
    "AttentionConfig",
    "BlockConfig",
    "jsonable",
    "relu_margin",
    "log_ratio_margin",
]

EPS64 = float(np.finfo(np.float64).eps)


def jsonable(x: Any) -> Any:
    """Plain JSON-able Python objects from numpy/torch scalars, arrays, tuples, dicts, dataclasses."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    if isinstance(x, torch.Tensor):
        return jsonable(x.detach().cpu().numpy())
    if isinstance(x, np.ndarray):
        return [jsonable(v) for v in x.tolist()] if x.ndim else jsonable(x.item())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        if hasattr(x, "to_dict"):
            return x.to_dict()
        return {f.name: jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return str(x)


def relu_margin(x: float) -> float:
    """``x`` with NaN mapped to ``-inf`` (a NaN margin is a violation, never a pass)."""
    return -math.inf if math.isnan(x) else float(x)


@dataclass(frozen=True)
class Assumption:
    """One hypothesis of a theorem on one instance: its name, whether it holds, and the value checked."""

    name: str
    holds: bool
    value: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "holds": bool(self.holds), "value": jsonable(self.value)}

    def __repr__(self) -> str:
        return f"Assumption({self.name!r}, holds={self.holds}, value={self.value!r})"


@dataclass(frozen=True)
class Conclusion:
    """The claim evaluated on one instance.

    ``holds`` and the ``margin`` (>= 0 iff it holds, on the theorem's ``margin_scale``); ``details``
    (every measured quantity). Two qualifiers keep artefacts apart from findings:

    * ``vacuous`` — why the bound is trivial on this instance (e.g. ``"bound <= 0"``), else ``None``:
      the claim holds there but says nothing; such draws are counted ("held (vacuous on k/n)");
    * ``excluded`` — why the instance cannot decide the claim (a degenerate tie such as ``κ ≡ 1`` at
      ``D = 1``, a rank undecidable in float64, a statistical test significant neither way), else
      ``None``: such draws are neither passes nor failures.
    """

    holds: bool
    margin: float
    details: dict[str, Any] = field(default_factory=dict)
    vacuous: str | None = None
    excluded: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"holds": bool(self.holds), "margin": float(self.margin), "details": jsonable(self.details),
                "vacuous": self.vacuous, "excluded": self.excluded}

    def __repr__(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in ("vacuous", "excluded") if getattr(self, k))
        return f"Conclusion(holds={self.holds}, margin={self.margin:.6g}{extra})"


@dataclass(frozen=True)
class CheckResult:
    """Result of :meth:`Theorem.check` on one instance.

    ``holds`` is the conclusion's verdict; ``assumptions_hold`` says whether the instance
    satisfied every assumption (a conclusion failing on an instance that violates an
    assumption is no counterexample). ``counterexample`` is true when the assumptions hold,
    the instance is not excluded (tie, undecidable) and the conclusion fails. ``quantities`` are
    the raw measurements (:meth:`Theorem.measure`) from which :meth:`Theorem.judge` derives
    strengthened variants without recomputation.
    """

    theorem_id: str
    instance: Any
    assumptions: tuple[Assumption, ...]
    conclusion: Conclusion
    reconstructed: bool
    variant_that_holds: str | None
    seconds: float
    quantities: Any = field(default=None, repr=False, compare=False)

    @property
    def assumptions_hold(self) -> bool:
        return all(a.holds for a in self.assumptions)

    @property
    def holds(self) -> bool:
        return bool(self.conclusion.holds)

    @property
    def margin(self) -> float:
        return float(self.conclusion.margin)

    @property
    def excluded(self) -> str | None:
        return self.conclusion.excluded

    @property
    def vacuous(self) -> str | None:
        return self.conclusion.vacuous

    @property
    def decided(self) -> bool:
        """The assumptions hold and the instance is not excluded: it counts as a pass or a failure."""
        return self.assumptions_hold and self.excluded is None

    @property
    def counterexample(self) -> bool:
        return self.decided and not self.holds

    def to_dict(self) -> dict[str, Any]:
        return {
            "theorem_id": self.theorem_id,
            "instance": jsonable(self.instance),
            "assumptions": [a.to_dict() for a in self.assumptions],
            "assumptions_hold": self.assumptions_hold,
            "conclusion": self.conclusion.to_dict(),
            "holds": self.holds,
            "margin": self.margin,
            "vacuous": self.vacuous,
            "excluded": self.excluded,
            "counterexample": self.counterexample,
            "reconstructed": self.reconstructed,
            "variant_that_holds": self.variant_that_holds,
            "seconds": self.seconds,
        }

    def __repr__(self) -> str:
        failed = [a.name for a in self.assumptions if not a.holds]
        extra = f", failed_assumptions={failed}" if failed else ""
        for k in ("vacuous", "excluded"):
            if getattr(self, k):
                extra += f", {k}={getattr(self, k)!r}"
        return (f"CheckResult({self.theorem_id!r}, holds={self.holds}, margin={self.margin:.6g}"
                f"{extra}, instance={self.instance!r})")


@dataclass(frozen=True)
class Theorem:
    """A claim of MATH.md §5 (or a user's own) as an object.

    Subclasses implement :meth:`assumptions`, :meth:`measure` (the expensive part: build the model,
    compute the quantities) and :meth:`judge` (cheap: compare them, optionally with the bound made
    ``strength`` times stronger — the "bound ×10 / ×100" false variants of :mod:`.power` reuse the
    measurements). A theorem with no scalable bound sets ``strengths=()``.

    Attributes
    ----------
    id : registry key, e.g. ``"S24.thm1.rank"``.
    citation : paper and statement, e.g. ``"[S24] Theorem 1"``, plus the MATH.md section.
    statement : the reconstruction that is checked, in words and formulas.
    reconstructed : true when the statement is our reading of a paper (MATH.md preamble).
    margin_scale : what the margin measures and its units.
    instance_type : the dataclass of instances this theorem accepts.
    paper_statement : the claim as MATH.md §5 states it (quoted next to ``statement``).
    exact : an exact identity/inequality (checked up to a stated rounding tolerance).
    variant_that_holds : for a reconstructed claim that may fail, the statement (or registered
        id) that holds instead; ``None`` when none is known or needed.
    statistical_test : for a statistical claim, the test and its confidence level.
    max_examples : cap on Hypothesis examples per run (cost control for GD-based claims).
    strengths : the factors of the "bound ×k" false variants (``()``: no scalable bound).
    switches : the reconstruction's switchable choices and their values (shown by ``describe``).
    """

    id: str
    citation: str
    statement: str
    reconstructed: bool
    margin_scale: str
    instance_type: type
    paper_statement: str = ""
    exact: bool = False
    variant_that_holds: str | None = None
    statistical_test: str | None = None
    max_examples: int | None = None
    strengths: tuple[float, ...] = (10.0, 100.0)

    # -- to be implemented by subclasses ------------------------------------------
    def assumptions(self, instance: Any) -> list[Assumption]:  # pragma: no cover - abstract
        raise NotImplementedError

    def measure(self, instance: Any) -> dict[str, Any]:  # pragma: no cover - abstract
        """Every quantity the conclusion needs (a plain dict of numbers)."""
        raise NotImplementedError

    def judge(self, q: dict[str, Any], strength: float = 1.0) -> Conclusion:  # pragma: no cover - abstract
        """The conclusion from the measured ``q``; ``strength > 1`` makes the bound that many times
        stronger (a deliberately false variant)."""
        raise NotImplementedError

    def violating_instance(self) -> Any:  # pragma: no cover - abstract
        """A deliberately violating instance on which ``conclusion(...).holds`` is ``False``."""
        raise NotImplementedError

    # -- optional hooks -------------------------------------------------------------
    def prior_assumptions(self, instance: Any) -> list[Assumption]:
        """The assumptions that can be checked before the (possibly expensive) measurement; the
        strategies filter on these. Default: all of :meth:`assumptions`."""
        return self.assumptions(instance)

    def kernel_variants(self) -> tuple[tuple[str, str, Theorem], ...]:
        """``(name, description, theorem)`` false variants with the wrong kernel in the claim,
        evaluated on the theorem's own draws (default: none)."""
        return ()

    @property
    def switches(self) -> dict[str, Any]:
        """The reconstruction's switchable choices (dataclass fields beyond the base ones)."""
        base = {f.name for f in dataclasses.fields(Theorem)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in base}

    # -- shared -------------------------------------------------------------------
    def conclusion(self, instance: Any, strength: float = 1.0) -> Conclusion:
        """``judge(measure(instance), strength)``."""
        return self.judge(self.measure(instance), strength)

    def validate(self, instance: Any) -> Any:
        """Refuse an instance of the wrong type (TypeError naming the expected type)."""
        if not isinstance(instance, self.instance_type):
            raise TypeError(
                f"instance for {self.id} must be a {self.instance_type.__name__}, "
                f"got {type(instance).__name__}"
            )
        return instance

    def assumptions_hold(self, instance: Any) -> bool:
        return all(a.holds for a in self.assumptions(self.validate(instance)))

    def prior_assumptions_hold(self, instance: Any) -> bool:
        return all(a.holds for a in self.prior_assumptions(self.validate(instance)))

    def check(self, instance: Any) -> CheckResult:
        """Evaluate the assumptions and the conclusion on ``instance``."""
        self.validate(instance)
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # the claims judge underflow themselves (e.g. the rank at 400 digits)
            warnings.simplefilter("ignore", KernelUnderflowWarning)
            assumptions = tuple(self.assumptions(instance))
            q = self.measure(instance)
        conclusion = self.judge(q)
        return CheckResult(
            theorem_id=self.id,
            instance=instance,
            assumptions=assumptions,
            conclusion=conclusion,
            reconstructed=self.reconstructed,
            variant_that_holds=self.variant_that_holds,
            seconds=time.perf_counter() - t0,
            quantities=q,
        )

    def describe(self) -> dict[str, Any]:
        """The theorem's metadata as a JSON-able dict."""
        return {
            "id": self.id,
            "citation": self.citation,
            "paper_statement": self.paper_statement,
            "statement": self.statement,
            "reconstructed": self.reconstructed,
            "exact": self.exact,
            "margin_scale": self.margin_scale,
            "instance_type": self.instance_type.__name__,
            "variant_that_holds": self.variant_that_holds,
            "statistical_test": self.statistical_test,
            "max_examples": self.max_examples,
            "strengths": list(self.strengths),
            "switches": jsonable(self.switches),
        }

    def to_dict(self) -> dict[str, Any]:
        return self.describe()

    def __repr__(self) -> str:
        tag = ", reconstructed" if self.reconstructed else ""
        return f"{type(self).__name__}({self.id!r}, {self.citation!r}{tag})"


def log_ratio_margin(value: float, bound: float, tol: float = 0.0) -> float:
    """``log10((value + tol) / bound)`` for a lower bound ``value >= bound``: decades of slack.

    ``+inf`` when ``bound <= 0`` and ``value + tol >= 0``; ``-inf`` when ``value + tol <= 0 < bound``.
    """
    v = value + tol
    if math.isnan(v) or math.isnan(bound):
        return -math.inf
    if bound <= 0:
        return math.inf if v >= 0 else -math.inf
    if v <= 0:
        return -math.inf
    return math.log10(v / bound)
