"""Shared pieces of ``attncond reproduce``: sizes, result types, seeding, plotting helpers."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

SIZES: tuple[str, ...] = ("smoke", "quick", "full")
VERDICTS: tuple[str, ...] = ("held", "finding", "inconclusive")
ALPHA = 0.05  # two-sided level of every test behind a verdict
DPI = 90


def check_size(size: Any) -> str:
    """``size`` must be one of :data:`SIZES`."""
    if not isinstance(size, str):
        raise TypeError(f"size must be one of {SIZES}, got {type(size).__name__}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(map(repr, SIZES))}")
    return size


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_out(out: Any) -> Path | None:
    if out is None:
        return None
    if not isinstance(out, (str, Path)):
        raise TypeError(f"out must be a path (str or pathlib.Path) or None, got {type(out).__name__}")
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ValueError(f"out={str(p)!r} exists and is not a directory")
    return p


def prepare_out(out: Any) -> Path:
    """Create the report folder ``out`` and check that a file can be written there.

    Raises ``ValueError`` naming ``out`` when it is a file, lies under a file, or cannot be
    written: called before any experiment runs, so a bad folder fails in milliseconds.
    """
    p = check_out(out)
    if p is None:
        raise ValueError("out must name a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".attncond-write-test"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"out={str(p)!r} is not a writable folder: {exc}") from None
    return p


@dataclass(frozen=True)
class Finding:
    """One claim of a paper, what our run says about it, at what scale and with what confidence.

    ``verdict`` is one of :data:`VERDICTS`: ``"held"`` (the statistics decide for the claim),
    ``"finding"`` (they decide against it: a counterexample or a significant effect the other
    way) or ``"inconclusive"`` (they do not decide). ``seeds`` is the number of independent
    seeds (or draws) the verdict rests on; ``confidence`` states the test: a Clopper–Pearson
    interval for a rate, or a paired test's p-value with its n.
    """

    paper: str
    claim: str
    verdict: str
    evidence: str
    scale: str
    seeds: int
    confidence: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds!r}")
        if not isinstance(self.confidence, str) or not self.confidence:
            raise ValueError("confidence must be a non-empty statement of the test behind the verdict")

    def to_dict(self) -> dict[str, Any]:
        return {"paper": self.paper, "claim": self.claim, "verdict": self.verdict,
                "evidence": self.evidence, "scale": self.scale, "seeds": self.seeds,
                "confidence": self.confidence}


@dataclass(frozen=True)
class RateCI:
    """``k`` of ``n`` with its exact (Clopper–Pearson) ``level`` interval for the rate ``k/n``."""

    k: int
    n: int
    low: float
    high: float
    level: float = 0.95

    def __str__(self) -> str:
        name = "95% Clopper–Pearson" if self.level == 0.95 else f"{self.level:g} Clopper–Pearson"
        return f"{self.k}/{self.n} ({name} [{self.low:.2f}, {self.high:.2f}])"

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "n": self.n, "low": self.low, "high": self.high, "level": self.level}


def rate_ci(k: int, n: int, level: float = 0.95) -> RateCI:
    """Clopper–Pearson interval of ``k/n``: ``scipy.stats.binomtest(k, n).proportion_ci("exact")``."""
    from scipy.stats import binomtest

    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"rate_ci needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return RateCI(k, n, float(ci.low), float(ci.high), level)


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison of ``a`` and ``b`` over seeds (lower is better unless ``higher_better``).

    ``wins_a`` counts pairs where ``a`` is better, ``ties`` exact ties (dropped, as in the
    Wilcoxon ``"wilcox"`` zero method). ``p`` is the two-sided exact Wilcoxon signed-rank
    p-value of ``a − b`` (``scipy.stats.wilcoxon``), 1 when every pair ties; ``p_floor`` the
    smallest p any outcome could give with this many untied pairs (``2/2^m``): when it is
    above ``alpha`` the test cannot decide, whatever the data. ``rank_sum_a`` / ``rank_sum_b`` are the
    signed-rank sums ``W⁻`` / ``W⁺`` of the untied pairs where ``a`` / ``b`` is better: the direction of
    a significant result is the side with the larger sum (the statistic the test decides on; the win
    counts can point the other way when the few wins of one side are the large differences).
    """

    n: int
    wins_a: int
    wins_b: int
    ties: int
    median_diff: float
    p: float
    p_floor: float
    alpha: float = ALPHA
    rank_sum_a: float = 0.0
    rank_sum_b: float = 0.0

    @property
    def decided(self) -> bool:
        return self.p < self.alpha

    def verdict(self, claim_a_better: bool = True) -> str:
        """``held`` if significant in the claimed direction, ``finding`` if significant against it."""
        if not self.decided:
            return "inconclusive"
        a_better = self.rank_sum_a > self.rank_sum_b
        return "held" if a_better == claim_a_better else "finding"

    def statement(self, a: str = "a", b: str = "b", better: str = "better") -> str:
        s = (f"Wilcoxon signed-rank (two-sided, exact) p = {self.p:.3g}, n = {self.n} paired seeds "
             f"({a} {better} on {self.wins_a}, {b} on {self.wins_b}, {self.ties} ties)")
        if self.p_floor >= self.alpha:
            s += f"; with {self.n - self.ties} untied pairs no outcome can reach p < {self.alpha:g}"
        return s

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "wins_a": self.wins_a, "wins_b": self.wins_b, "ties": self.ties,
                "median_diff": self.median_diff, "p": self.p, "p_floor": self.p_floor, "alpha": self.alpha,
                "rank_sum_a": self.rank_sum_a, "rank_sum_b": self.rank_sum_b}


def paired_test(a: Sequence[float], b: Sequence[float], *, higher_better: bool = False,
                alpha: float = ALPHA) -> PairedTest:
    """Paired two-sided Wilcoxon signed-rank test of ``a`` against ``b`` (same seeds, same order).

    Non-finite values are allowed where they order: ``+inf`` (e.g. "never reached") is worse
    than any finite value when lower is better; a pair with a NaN is a tie.
    """
    from scipy.stats import rankdata, wilcoxon

    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape or x.ndim != 1 or x.size < 1:
        raise ValueError(f"a and b must be 1-D and of equal length >= 1, got {x.shape} and {y.shape}")
    if higher_better:
        x, y = -x, -y
    with np.errstate(invalid="ignore"):
        d = x - y
    both_inf = np.isinf(x) & np.isinf(y) & (np.sign(x) == np.sign(y))
    d = np.where(both_inf | np.isnan(d), 0.0, d)
    # an infinite difference keeps its sign and ranks above every finite one
    fin = np.isfinite(d)
    big = (np.abs(d[fin]).max() if fin.any() else 1.0) * 2 + 1
    d = np.where(np.isinf(d), np.sign(d) * big, d)
    m = int((d != 0).sum())
    p = 1.0 if m == 0 else float(wilcoxon(d[d != 0], method="exact" if m <= 50 else "auto").pvalue)
    med = float(np.median(d))
    nz = d[d != 0]
    ranks = rankdata(np.abs(nz)) if m else np.zeros(0)
    return PairedTest(int(x.size), int((d < 0).sum()), int((d > 0).sum()), int(x.size - m),
                      med, p, 1.0 if m == 0 else min(1.0, 2.0 / 2 ** m), alpha,
                      float(ranks[nz < 0].sum()), float(ranks[nz > 0].sum()))


def spearman_test(x: Iterable[float], y: Iterable[float]) -> tuple[float, float, int]:
    """Spearman ``(ρ, two-sided p, n)`` over the finite pairs (scipy); NaN ρ, p = 1 when undefined.

    For ``n ≤ 12`` the p-value is at least ``2/n!``, the smallest an exact permutation test allows.
    """
    from scipy.stats import spearmanr

    xs, ys = np.asarray(list(x), float), np.asarray(list(y), float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    n = int(ok.sum())
    if n < 3 or np.ptp(xs[ok]) == 0 or np.ptp(ys[ok]) == 0:
        return math.nan, 1.0, n
    r = spearmanr(xs[ok], ys[ok])
    # scipy's p comes from a t approximation, which gives p = 0 for a perfect order of 3 points; no
    # permutation test can go below 2/n! (two-sided), so the p-value is floored there
    p = max(float(r.pvalue), 2.0 / math.factorial(n)) if n <= 12 else float(r.pvalue)
    return float(r.statistic), p, n


def spearman_verdict(rho: float, p: float, positive: bool = True, alpha: float = ALPHA) -> str:
    """``held`` for a significant correlation of the claimed sign, ``finding`` for the other sign."""
    if math.isnan(rho) or p >= alpha:
        return "inconclusive"
    return "held" if (rho > 0) == positive else "finding"


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test of ``wins`` against ``losses`` (ties excluded): ``binomtest(wins, n, 1/2)``."""
    from scipy.stats import binomtest

    n = int(wins) + int(losses)
    return 1.0 if n == 0 else float(binomtest(int(wins), n, 0.5).pvalue)


def sign_verdict(wins: int, losses: int, alpha: float = ALPHA) -> str:
    """``held`` if the claimed side wins significantly (sign test), ``finding`` if the other side does."""
    if sign_test_p(wins, losses) >= alpha:
        return "inconclusive"
    return "held" if wins > losses else "finding"


def counterexample_verdict(failures: int, n: int) -> tuple[str, str]:
    """A deterministic claim checked on ``n`` draws: ``held`` with no failure, else ``finding``;
    the confidence is the Clopper–Pearson interval of the failure rate."""
    ci = rate_ci(failures, n)
    return ("held" if failures == 0 else "finding"), f"failures {ci}"


@dataclass(frozen=True)
class Figure:
    """A PNG written by an experiment: file name relative to the report folder, and caption."""

    path: str
    caption: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "caption": self.caption}


@dataclass(frozen=True, repr=False)
class ExperimentResult:
    """Everything one paper's experiments produced: config, every number, figures, findings."""

    name: str
    title: str
    size: str
    seed: int
    config: dict[str, Any]
    numbers: dict[str, Any]
    figures: tuple[Figure, ...] = ()
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "name": self.name, "title": self.title, "size": self.size, "seed": self.seed,
            "seconds": self.seconds, "config": self.config, "numbers": self.numbers,
            "figures": [f.to_dict() for f in self.figures],
            "findings": [f.to_dict() for f in self.findings], "notes": list(self.notes),
        })

    def __repr__(self) -> str:
        verdicts = ", ".join(f"{f.verdict}" for f in self.findings)
        return (f"ExperimentResult({self.name}, size={self.size!r}, seed={self.seed}, "
                f"{len(self.figures)} figures, findings=[{verdicts}], {self.seconds:.1f}s)")


def jsonable(x: Any) -> Any:
    """Recursively turn tensors/arrays/tuples/numpy scalars into JSON-able Python values."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return jsonable(x.detach().cpu().tolist())
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if hasattr(x, "to_dict"):
        return jsonable(x.to_dict())
    return x


class Timer:
    """``with Timer() as t: …``; ``t.seconds`` afterwards."""

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t0


def seeded(seed: int) -> None:
    """Seed torch and numpy's legacy global generators (every draw here also passes its own)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - legacy global seeding for third-party code


def mean_std(rows: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise mean and std of equal-length rows (NaN-aware: diverged runs are NaN-padded)."""
    a = np.asarray(rows, dtype=float)
    with np.errstate(all="ignore"):
        return np.nanmean(a, axis=0), np.nanstd(a, axis=0)


def geo_band(rows: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geometric mean and min/max band of positive curves (for log-scale shading)."""
    a = np.asarray(rows, dtype=float)
    a = np.where(a > 0, a, np.nan)
    with np.errstate(all="ignore"), _quiet():
        return np.exp(np.nanmean(np.log(a), axis=0)), np.nanmin(a, axis=0), np.nanmax(a, axis=0)


class _quiet:
    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._w.__exit__(*exc)


def pad(losses: Sequence[float], length: int) -> list[float]:
    """Pad a (possibly early-stopped, diverged) loss list with NaN to ``length``."""
    out = [float(v) if math.isfinite(v) else math.nan for v in losses[:length]]
    return out + [math.nan] * (length - len(out))


def spearman(x: Iterable[float], y: Iterable[float]) -> float:
    """Spearman rank correlation (scipy), NaN when fewer than 3 finite pairs."""
    from scipy.stats import spearmanr

    xs, ys = np.asarray(list(x), float), np.asarray(list(y), float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    if ok.sum() < 3 or np.ptp(xs[ok]) == 0 or np.ptp(ys[ok]) == 0:
        return math.nan
    return float(spearmanr(xs[ok], ys[ok]).statistic)


def save(fig: Any, out: Path | None, name: str, caption: str, figures: list[Figure]) -> None:
    """Save ``fig`` as ``out/name`` (dpi :data:`DPI`) and record it; close it either way."""
    import matplotlib.pyplot as plt

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / name, dpi=DPI)
        figures.append(Figure(name, caption))
    plt.close(fig)


def pyplot() -> Any:
    """matplotlib.pyplot with the Agg backend (imported lazily: plots are CLI-only)."""
    from ..report import pyplot as _pyplot

    return _pyplot()


ProgressFn = Callable[..., Iterable[Any]]
