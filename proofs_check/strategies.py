"""Composable Hypothesis strategies for the theory claims (MATH.md §5), importable in users' tests.

>>> from hypothesis import given
>>> from proofs_check.strategies import attention_configs
>>> @given(attention_configs(N=(1, 3), H=2))
... def test_my_claim(cfg): ...

* :func:`attention_configs` — :class:`~proofs_check.configs.AttentionConfig` with a bound on
  every size (an ``int`` fixes it, a ``(lo, hi)`` pair bounds it; every upper bound ≤ 64);
* :func:`block_configs` — :class:`~proofs_check.configs.BlockConfig` likewise;
* boundary strategies, where the claims break: :func:`hd_equals_nn`, :func:`near_uniform_attention`,
  :func:`sharp_attention`, :func:`tiny_sigma_min_X`, and :func:`probability_vectors`.

Scales are drawn log-uniformly (``10**u``) so that shrinking moves towards ``10**lo``.

This module imports only :mod:`proofs_check.configs`. The strategies of each registered claim
(``instances(theorem_id)``, and one per assumption that draws instances violating it) are
registered together with the theorem: :func:`proofs_check.theorems.instances`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from .configs import AttentionConfig, BlockConfig

__all__ = [
    "attention_configs",
    "block_configs",
    "hd_equals_nn",
    "near_uniform_attention",
    "sharp_attention",
    "tiny_sigma_min_X",
    "probability_vectors",
    "log_uniform",
    "SIZE_CAP",
]

SIZE_CAP = 64
Bound = int | tuple[int, int]


def _bound(name: str, b: Any) -> tuple[int, int]:
    if isinstance(b, bool):
        raise TypeError(f"{name} must be an int or a (lo, hi) pair of ints, got {b!r}")
    if isinstance(b, int):
        b = (b, b)
    if not (isinstance(b, tuple) and len(b) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                            for v in b)):
        raise TypeError(f"{name} must be an int or a (lo, hi) pair of ints, got {b!r}")
    lo, hi = b
    if lo < 1 or hi < lo:
        raise ValueError(f"{name} must satisfy 1 <= lo <= hi, got {b}")
    if hi > SIZE_CAP:
        raise ValueError(f"{name} upper bound {hi} exceeds the cap {SIZE_CAP} (keep property tests small)")
    return lo, hi


def _ints(name: str, b: Any) -> st.SearchStrategy[int]:
    lo, hi = _bound(name, b)
    return st.integers(lo, hi)


def log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    """``10**u`` with ``u`` uniform in ``[log10 lo, log10 hi]`` (shrinks towards ``lo``)."""
    import math

    if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and 0 < lo <= hi < math.inf):
        raise ValueError(f"log_uniform needs 0 < lo <= hi < inf, got ({lo}, {hi})")
    a, b = math.log10(lo), math.log10(hi)
    if a == b:
        return st.just(float(lo))
    return st.floats(a, b, allow_nan=False).map(lambda u: float(10.0**u))


def _choice(name: str, items: Sequence[Any]) -> st.SearchStrategy[Any]:
    items = list(items)
    if not items:
        raise ValueError(f"{name} must name at least one option")
    return st.sampled_from(items)


def attention_configs(
    N: Bound = (1, 3),
    n: Bound = (2, 3),
    D: Bound = (1, 6),
    d: Bound = (1, 3),
    H: Bound = (1, 3),
    *,
    kernels: Sequence[str] = ("softmax", "gaussian"),
    value_params: Sequence[str] = ("per_head",),
    trainables: Sequence[tuple[str, ...]] = (("W_Q", "W_K", "W_V"),),
    d_out: Bound = 1,
    init_scale: tuple[float, float] = (0.3, 3.0),
    x_scale: tuple[float, float] = (1.0, 1.0),
    seeds: tuple[int, int] = (0, 2**16),
    hd_at_least_nn: bool = False,
    hd_below_nn: bool = False,
) -> st.SearchStrategy[AttentionConfig]:
    """[S24] configurations with every size bounded (``int`` = fixed, ``(lo, hi)`` = range, ``hi ≤ 64``).

    ``hd_at_least_nn=True`` draws ``D ≥ ⌈Nn/H⌉`` (still within ``D``'s bound) so that ``HD ≥ Nn``;
    ``hd_below_nn=True`` draws ``D ≤ ⌊(Nn − 1)/H⌋`` so that ``HD < Nn`` (the [S24] Theorem 1 assumption
    violated); configurations that cannot satisfy it inside the bounds are filtered out.
    """
    if hd_at_least_nn and hd_below_nn:
        raise ValueError("hd_at_least_nn and hd_below_nn exclude each other")
    from attncond.models import KERNELS

    for k in kernels:
        if k not in KERNELS:
            raise ValueError(f"unknown kernel {k!r}; known: {', '.join(KERNELS)}")
    Dlo, Dhi = _bound("D", D)
    base = st.tuples(_ints("N", N), _ints("n", n), _ints("d", d), _ints("H", H))

    @st.composite
    def build(draw: Callable) -> AttentionConfig:
        N_, n_, d_, H_ = draw(base)
        lo, hi = Dlo, Dhi
        if hd_at_least_nn:
            lo = max(Dlo, -(-N_ * n_ // H_))
        if hd_below_nn:
            hi = min(Dhi, (N_ * n_ - 1) // H_)
        if lo > hi:
            from hypothesis import assume

            assume(False)
        return AttentionConfig(
            N=N_, n=n_, D=draw(st.integers(lo, hi)), d=d_, H=H_,
            kernel=draw(_choice("kernels", kernels)),
            value_param=draw(_choice("value_params", value_params)),
            d_out=draw(_ints("d_out", d_out)),
            trainable=tuple(draw(_choice("trainables", trainables))),
            init_scale=draw(log_uniform(*init_scale)), x_scale=draw(log_uniform(*x_scale)),
            seed=draw(st.integers(*seeds)),
        )

    return build()


def block_configs(
    N: Bound = (1, 4),
    n: Bound = (2, 4),
    D: Bound = (1, 5),
    d: Bound = (1, 3),
    *,
    init_scale: tuple[float, float] = (1e-3, 1e-2),
    v_scale: tuple[float, float] = (0.3, 3.0),
    x_scale: tuple[float, float] = (1.0, 1.0),
    seeds: tuple[int, int] = (0, 2**16),
    tall: bool = True,
) -> st.SearchStrategy[BlockConfig]:
    """[Q25] block configurations; ``tall=True`` keeps ``Nn ≥ D`` (filtering)."""
    s = st.builds(
        BlockConfig, N=_ints("N", N), n=_ints("n", n), D=_ints("D", D), d=_ints("d", d),
        init_scale=log_uniform(*init_scale), v_scale=log_uniform(*v_scale), x_scale=log_uniform(*x_scale),
        seed=st.integers(*seeds),
    )
    return s.filter(lambda b: b.N * b.n >= b.D) if tall else s


# --------------------------------------------------------------------------------- boundaries
def hd_equals_nn(N: Bound = (1, 4), n: Bound = (1, 4), H: Bound = (1, 4), D_max: int = 16,
                 **kw: Any) -> st.SearchStrategy[AttentionConfig]:
    """Configurations with ``HD = Nn`` exactly (the rank boundary of [S24] Theorem 1): ``H`` is drawn
    among the divisors of ``Nn`` with ``Nn/H ≤ D_max``."""
    _bound("D_max", D_max)
    base = st.tuples(_ints("N", N), _ints("n", n))

    @st.composite
    def build(draw: Callable) -> AttentionConfig:
        N_, n_ = draw(base)
        Nn = N_ * n_
        Hlo, Hhi = _bound("H", H)
        divs = [h for h in range(Hlo, Hhi + 1) if Nn % h == 0 and Nn // h <= D_max]
        if not divs:
            from hypothesis import assume

            assume(False)
        H_ = draw(st.sampled_from(divs))
        cfg = draw(attention_configs(N=N_, n=max(n_, 1), D=Nn // H_, H=H_, **kw))
        return cfg

    return build()


def near_uniform_attention(**kw: Any) -> st.SearchStrategy[AttentionConfig]:
    """[S24] configurations with ``W_Q``/``W_K`` scaled by ``10^-4 … 10^-2``: attention ≈ ``(1/n)11ᵀ``."""
    kw.setdefault("init_scale", (1e-4, 1e-2))
    return attention_configs(**kw)


def sharp_attention(**kw: Any) -> st.SearchStrategy[AttentionConfig]:
    """[S24] configurations with ``W_Q``/``W_K`` scaled by ``5 … 50``: attention close to one-hot."""
    kw.setdefault("init_scale", (5.0, 50.0))
    return attention_configs(**kw)


def tiny_sigma_min_X(**kw: Any) -> st.SearchStrategy[BlockConfig]:
    """[Q25] block configurations whose stacked inputs are tiny (``x_scale`` in ``10^-6 … 10^-2``):
    ``σ_min(X)`` is tiny, the Weyl bound ``σ_min(X) − ‖AXW_V‖`` is at its weakest and the residual
    adds almost nothing to ``Z``."""
    kw.setdefault("x_scale", (1e-6, 1e-2))
    return block_configs(**kw)


def probability_vectors(n: Bound = (2, 8), *, sparse: bool = False,
                        min_exponent: int = -12) -> st.SearchStrategy[tuple[float, ...]]:
    """Strictly positive probability vectors of length ``n`` (sum 1 within rounding).

    ``sparse=True`` draws most coefficients as ``10^u`` with ``u`` in ``[min_exponent, −2]`` and at
    least one of order 1 (sparse attention, the [I25] regime); otherwise entries come from
    ``U(0.05, 1)`` before normalising.
    """
    lo, hi = _bound("n", n)
    if not isinstance(min_exponent, int) or not -300 < min_exponent < -2:
        raise ValueError(f"min_exponent must be an integer in (-300, -2), got {min_exponent!r}")
    size = st.integers(lo, hi)

    @st.composite
    def build(draw: Callable) -> tuple[float, ...]:
        m = draw(size)
        if sparse:
            big = draw(st.integers(1, max(1, m // 2)))
            vals = [draw(st.floats(0.5, 1.0)) for _ in range(big)]
            vals += [10.0 ** draw(st.floats(min_exponent, -2)) for _ in range(m - big)]
            perm = draw(st.permutations(range(m)))
            vals = [vals[i] for i in perm]
        else:
            vals = [draw(st.floats(0.05, 1.0)) for _ in range(m)]
        total = sum(vals)
        return tuple(v / total for v in vals)

    return build()
