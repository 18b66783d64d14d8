"""Test matrices with known spectra (shared by the spectral tests)."""

from __future__ import annotations

import numpy as np


def random_orth(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


def with_spectrum(m: int, n: int, s: np.ndarray, seed: int = 0) -> np.ndarray:
    """``U diag(s) Vᵀ`` with random orthonormal ``U (m×r)``, ``V (n×r)``, ``r = len(s)``."""
    rng = np.random.default_rng(seed)
    r = len(s)
    return (random_orth(m, r, rng) * np.asarray(s)) @ random_orth(n, r, rng).T


def logspaced(r: int, kappa: float) -> np.ndarray:
    return np.logspace(0, -np.log10(kappa), r) if kappa > 1 else np.ones(r)


def lauchli(n: int, eps: float) -> np.ndarray:
    """Läuchli matrix ``[1ᵀ; eps·I]`` of shape ``(n+1, n)``; σ = sqrt(n+eps²), eps (×(n−1))."""
    return np.vstack([np.ones((1, n)), eps * np.eye(n)])


def trap_logspaced_close(m: int = 70, n: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Log-spaced small singular values whose two smallest are close neighbours."""
    s = np.logspace(0, -6, n)
    s[-2] = s[-1] * (1 + 1e-3)
    return with_spectrum(m, n, s, seed), np.sort(s)[::-1]


def trap_isolated_small(m: int = 70, n: int = 50, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """An isolated ``σ_min = 1e-8`` below a well-conditioned bulk."""
    s = np.r_[np.linspace(1.0, 0.1, n - 1), 1e-8]
    return with_spectrum(m, n, s, seed), np.sort(s)[::-1]


def true_extremes(A: np.ndarray) -> tuple[float, float, np.ndarray]:
    s = np.linalg.svd(np.asarray(A, dtype=np.float64), compute_uv=False)
    return float(s[0]), float(s[-1]), s


#: (kernel, kernel_options, tau) of every closed-form [S24] kernel (the structured-Gram and
#: AttentionJacobian tests run over all of them)
KERNEL_CASES = [
    ("softmax", {}, None),
    ("temperature", {}, 0.7),
    ("linear", {}, None),
    ("gaussian", {}, None),
    ("gaussian", {"normalize": True}, None),
]
