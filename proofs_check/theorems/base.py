"""Theorem objects: assumptions, a conclusion with a margin, and the records they return.

A :class:`Theorem` turns one claim of MATH.md §5 into two functions of an *instance*
(a small frozen dataclass of sizes, scales and seeds from which the theorem builds the
model and the data deterministically, so that Hypothesis can shrink it and a
counterexample prints as a readable configuration):

* ``assumptions(instance) -> list[Assumption]`` — each ``(name, holds, value)``;
* ``conclusion(instance) -> Conclusion`` — ``(holds, margin, details)``. The *margin*
  is how far the instance is from violating the claim, on the scale the theorem states
  in ``margin_scale``; ``holds`` is ``margin >= 0`` (exact claims allow a stated rounding
  tolerance, already folded into the margin).

:meth:`Theorem.check` runs both and returns a frozen :class:`CheckResult`.

Theorems marked ``reconstructed=True`` follow our reading of a paper whose full text we
did not have (MATH.md preamble). When one fails on an instance, that is a *finding*:
``variant_that_holds`` names the corrected statement (usually another registered id).
Statistical claims state their test and confidence level in ``statistical_test``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attncond.models import AttentionBlock, MultiHeadAttention, synthetic_regression

__all__ = [
    "Assumption",
    "Conclusion",
    "CheckResult",
    "Theorem",
    "AttentionConfig",
    "BlockConfig",
    "jsonable",
    "relu_margin",
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
    """The claim evaluated on one instance: ``holds``, the ``margin`` (>= 0 iff it holds) and details."""

    holds: bool
    margin: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"holds": bool(self.holds), "margin": float(self.margin), "details": jsonable(self.details)}

    def __repr__(self) -> str:
        return f"Conclusion(holds={self.holds}, margin={self.margin:.6g})"


@dataclass(frozen=True)
class CheckResult:
    """Result of :meth:`Theorem.check` on one instance.

    ``holds`` is the conclusion's verdict; ``assumptions_hold`` says whether the instance
    satisfied every assumption (a conclusion failing on an instance that violates an
    assumption is no counterexample). ``counterexample`` is true when the assumptions
    hold and the conclusion does not.
    """

    theorem_id: str
    instance: Any
    assumptions: tuple[Assumption, ...]
    conclusion: Conclusion
    reconstructed: bool
    variant_that_holds: str | None
    seconds: float

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
    def counterexample(self) -> bool:
        return self.assumptions_hold and not self.holds

    def to_dict(self) -> dict[str, Any]:
        return {
            "theorem_id": self.theorem_id,
            "instance": jsonable(self.instance),
            "assumptions": [a.to_dict() for a in self.assumptions],
            "assumptions_hold": self.assumptions_hold,
            "conclusion": self.conclusion.to_dict(),
            "holds": self.holds,
            "margin": self.margin,
            "counterexample": self.counterexample,
            "reconstructed": self.reconstructed,
            "variant_that_holds": self.variant_that_holds,
            "seconds": self.seconds,
        }

    def __repr__(self) -> str:
        failed = [a.name for a in self.assumptions if not a.holds]
        extra = f", failed_assumptions={failed}" if failed else ""
        return (f"CheckResult({self.theorem_id!r}, holds={self.holds}, margin={self.margin:.6g}"
                f"{extra}, instance={self.instance!r})")


@dataclass(frozen=True)
class Theorem:
    """A claim of MATH.md §5 as an object (subclasses implement the two methods).

    Attributes
    ----------
    id : registry key, e.g. ``"S24.thm1.rank"``.
    citation : paper and statement, e.g. ``"[S24] Theorem 1"``, plus the MATH.md section.
    statement : the claim in words and formulas.
    reconstructed : true when the statement is our reading of a paper (MATH.md preamble).
    margin_scale : what the margin measures and its units.
    instance_type : the dataclass of instances this theorem accepts.
    exact : an exact identity/inequality (checked up to a stated rounding tolerance).
    variant_that_holds : for a reconstructed claim that may fail, the statement (or registered
        id) that holds instead; ``None`` when none is known or needed.
    statistical_test : for a statistical claim, the test and its confidence level.
    max_examples : cap on Hypothesis examples per run (cost control for GD-based claims).
    """

    id: str
    citation: str
    statement: str
    reconstructed: bool
    margin_scale: str
    instance_type: type
    exact: bool = False
    variant_that_holds: str | None = None
    statistical_test: str | None = None
    max_examples: int | None = None

    # -- to be implemented by subclasses ------------------------------------------
    def assumptions(self, instance: Any) -> list[Assumption]:  # pragma: no cover - abstract
        raise NotImplementedError

    def conclusion(self, instance: Any) -> Conclusion:  # pragma: no cover - abstract
        raise NotImplementedError

    def violating_instance(self) -> Any:  # pragma: no cover - abstract
        """A deliberately violating instance on which ``conclusion(...).holds`` is ``False``."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------
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

    def check(self, instance: Any) -> CheckResult:
        """Evaluate the assumptions and the conclusion on ``instance``."""
        self.validate(instance)
        t0 = time.perf_counter()
        assumptions = tuple(self.assumptions(instance))
        conclusion = self.conclusion(instance)
        return CheckResult(
            theorem_id=self.id,
            instance=instance,
            assumptions=assumptions,
            conclusion=conclusion,
            reconstructed=self.reconstructed,
            variant_that_holds=self.variant_that_holds,
            seconds=time.perf_counter() - t0,
        )

    def describe(self) -> dict[str, Any]:
        """The theorem's metadata as a JSON-able dict."""
        return {
            "id": self.id,
            "citation": self.citation,
            "statement": self.statement,
            "reconstructed": self.reconstructed,
            "exact": self.exact,
            "margin_scale": self.margin_scale,
            "instance_type": self.instance_type.__name__,
            "variant_that_holds": self.variant_that_holds,
            "statistical_test": self.statistical_test,
            "max_examples": self.max_examples,
        }

    def to_dict(self) -> dict[str, Any]:
        return self.describe()

    def __repr__(self) -> str:
        tag = ", reconstructed" if self.reconstructed else ""
        return f"{type(self).__name__}({self.id!r}, {self.citation!r}{tag})"


# ---------------------------------------------------------------------------------- instances
def _pos_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {v!r}")
    if v <= 0:
        raise ValueError(f"{name} must be a positive integer, got {v}")
    return int(v)


def _pos_float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive number, got {v!r}")
    if not math.isfinite(float(v)) or float(v) <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class AttentionConfig:
    """An [S24] multi-head attention instance (MATH.md §3 "MH") with synthetic data.

    ``X`` has i.i.d. ``N(0, x_scale²)`` entries and ``y`` i.i.d. ``N(0, 1)``
    (:func:`models.synthetic_regression` with ``seed``); the weights come from
    :class:`models.MultiHeadAttention` with the same ``seed`` and ``init_scale`` (the
    ``W_Q``/``W_K`` multiplier: ≪ 1 near-uniform attention, ≫ 1 sharp attention).
    """

    N: int = 2
    n: int = 2
    D: int = 2
    d: int = 1
    H: int = 2
    kernel: str = "softmax"
    value_param: str = "per_head"
    d_out: int = 1
    trainable: tuple[str, ...] = ("W_Q", "W_K", "W_V")
    init_scale: float = 1.0
    x_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for k in ("N", "n", "D", "d", "H", "d_out"):
            _pos_int(k, getattr(self, k))
        _pos_float("init_scale", self.init_scale)
        _pos_float("x_scale", self.x_scale)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.trainable, tuple):
            raise TypeError(f"trainable must be a tuple of parameter names, got {self.trainable!r}")

    @property
    def HD(self) -> int:
        return self.H * self.D

    @property
    def Nn(self) -> int:
        return self.N * self.n

    def replace(self, **kw: Any) -> AttentionConfig:
        return dataclasses.replace(self, **kw)

    def build(
        self, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> tuple[MultiHeadAttention, torch.Tensor, torch.Tensor]:
        """``(model, X, y)`` for this configuration (float64 on the CPU by default)."""
        data = synthetic_regression(self.N, self.n, self.D, self.d_out, self.seed, x_scale=self.x_scale,
                                    dtype=dtype, device=device)
        model = MultiHeadAttention(
            self.D, self.d, self.H, kernel=self.kernel, value_param=self.value_param, d_out=self.d_out,
            trainable=self.trainable, init_scale=self.init_scale, dtype=dtype, device=device, seed=self.seed,
        )
        return model, data.X, data.y


@dataclass(frozen=True)
class BlockConfig:
    """A [Q25] single-head block instance (MATH.md §3 "Block") with synthetic data.

    ``init_scale`` multiplies ``W_Q``/``W_K`` (≪ 1: near-uniform attention);
    ``v_scale`` multiplies ``W_V`` (std ``v_scale/√D``).
    """

    N: int = 2
    n: int = 2
    D: int = 2
    d: int = 1
    init_scale: float = 0.01
    v_scale: float = 1.0
    x_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for k in ("N", "n", "D", "d"):
            _pos_int(k, getattr(self, k))
        for k in ("init_scale", "v_scale", "x_scale"):
            _pos_float(k, getattr(self, k))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def replace(self, **kw: Any) -> BlockConfig:
        return dataclasses.replace(self, **kw)

    def build(self, *, residual: bool = True, ffn: bool = False, trainable: Sequence[str] | None = None,
              dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
              **block_kw: Any) -> tuple[AttentionBlock, torch.Tensor, torch.Tensor]:
        """``(block, X, Y)`` with ``Y`` of shape (N, n, D), i.i.d. ``N(0, 1)``."""
        data = synthetic_regression(self.N, self.n, self.D, self.D, self.seed, x_scale=self.x_scale,
                                    dtype=dtype, device=device)
        block = AttentionBlock(self.D, self.d, residual=residual, ffn=ffn, trainable=trainable,
                               init_scale=self.init_scale, dtype=dtype, device=device, seed=self.seed,
                               **block_kw)
        if self.v_scale != 1.0:
            with torch.no_grad():
                block.W_V.mul_(self.v_scale)
        return block, data.X, data.y
