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
VERDICTS: tuple[str, ...] = ("supported", "not supported", "mixed", "inconclusive")
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
    """One claim of a paper, what our run says about it, and at what scale."""

    paper: str
    claim: str
    verdict: str
    evidence: str
    scale: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_dict(self) -> dict[str, str]:
        return {"paper": self.paper, "claim": self.claim, "verdict": self.verdict,
                "evidence": self.evidence, "scale": self.scale}


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
