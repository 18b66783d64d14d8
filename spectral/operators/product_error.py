r"""How far an autograd operator's products may lie from the mathematical operator's.

A certificate on a matrix-free operator is about the matrix its products compute. Autograd products
of a model carry the rounding of its forward pass, and that rounding is not always at the level of
``eps·‖A‖``: tokens with a large common component ``c`` make the logits of a stock attention
``≈ c·|q||k|`` with an error ``≈ eps·c·|q||k|``, while the logits differ by ``O(1)``; the Jacobian then
carries errors ``≈ eps·c`` relative, far above the rounding allowance of the solvers.

Estimate (the matrices of MATH.md §4; README, "What is certified and what is assumed"): the products
at the stored point against the products at a point whose floating parameters and inputs are perturbed
componentwise by ``ulps`` units in the last place, ``t·(1 + r·ulps·eps)`` with ``r ~ U[-1, 1]`` (finite
entries only; integer token ids, boolean masks and ``-inf`` mask entries are left alone):

.. math::

    \eta = \max_k \frac{\lVert P(x_k) - \tilde P(x_k) \rVert}{\lVert x_k \rVert}, \qquad
    \text{bound} = \text{SAFETY}\cdot\eta,

with ``P`` the product on the larger side (``J v`` when ``m ≥ n``, ``Jᵀ u`` otherwise: for a random
error matrix ``E`` the ratio ``‖E‖₂ / ‖E x‖`` is then at most about 2) over :data:`PROBES` random unit
vectors. A backward-stable forward pass computes the products of a point within a few ulps of the
stored one, so ``η`` is the size of the products' rounding error, measured. It is an **estimate, not a
bound**: the probe directions may miss the error's worst direction and the forward may round worse
than an input perturbation of that size. Measured against float64 truth on ``nn.MultiheadAttention``
with a common key component ``c = 10³ … 10¹⁰`` (``tests/spectral/test_product_error.py``), the true
``‖J̃ − J‖₂`` was 0.9–1.7 ``η``; ``SAFETY = 4`` covers that with room. By Weyl's inequality every
singular value of the computed operator lies within ``‖J̃ − J‖₂`` of the true one, so each interval is
widened by ``bound`` (eigenvalues of a symmetric operator alike). Only an estimate beyond rounding level
(``ROUNDING_ULPS``) can withdraw a certificate: there an end whose widened interval misses ``tol`` is
``converged=False``, with this estimate as the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attncond.spectral.results import to_jsonable

__all__ = ["ProductError", "PointProducts", "estimate_product_error", "estimate_point_error", "perturb_ulps",
           "PERTURBATION_ULPS", "SAFETY", "PROBES", "ROUNDING_ULPS"]

#: a product as a function of the point: ``product(tensors, inputs, x)``
Product = Callable[[Sequence[torch.Tensor], tuple[Any, ...], torch.Tensor], torch.Tensor]

#: componentwise relative perturbation of the parameters and inputs, in units of the dtype's eps
PERTURBATION_ULPS = 4.0
#: the widening is this multiple of the measured change (see the module docstring)
SAFETY = 4.0
#: random probe vectors
PROBES = 3
#: products whose estimated error is within ``max(max(m, n), ROUNDING_ULPS)·eps·‖A‖`` are at rounding level
#: (the solvers' own allowance; a smooth forward amplifies a few-ulp perturbation by a modest factor: an
#: exactly linear one gives ``SAFETY·PERTURBATION_ULPS = 16`` ulps)
ROUNDING_ULPS = 1024.0


@dataclass(frozen=True, repr=False)
class ProductError:
    """The estimated error of an operator's products (module docstring).

    ``bound``: the absolute widening of every singular value (or eigenvalue), ``SAFETY·measured``.
    ``measured``: ``max_k ‖P(x_k) − P̃(x_k)‖/‖x_k‖``; ``scale``: ``max_k ‖P(x_k)‖/‖x_k‖`` (a lower bound on
    ``‖A‖``); ``rounding``: what counts as rounding level, ``max(max(m, n), ROUNDING_ULPS)·eps·scale``;
    ``side``: ``"A·x"`` or ``"Aᵀ·y"``; ``beyond_rounding``: ``bound > rounding``.
    """

    bound: float
    measured: float
    scale: float
    rounding: float
    side: str
    probes: int
    ulps: float
    what: str

    @property
    def beyond_rounding(self) -> bool:
        return not self.bound <= self.rounding

    @property
    def relative(self) -> float:
        """``measured / scale``: the change relative to the products' size."""
        return self.measured / self.scale if self.scale > 0 else (0.0 if self.measured == 0 else math.inf)

    def describe(self) -> str:
        """One sentence: what was measured and what it does to the intervals."""
        ratio = self.bound / self.rounding if self.rounding > 0 else math.inf
        level = (f"{ratio:.3g}x the rounding allowance {self.rounding:.3g}: beyond rounding" if
                 self.beyond_rounding else f"within the rounding allowance {self.rounding:.3g}")
        return (f"{self.what} products' error estimated at {self.bound:.3g} ({SAFETY:g}x the change of "
                f"{self.side} under {self.ulps:g}-ulp perturbations of the parameters and inputs, "
                f"{self.relative:.3g} relative; {level}); every interval is widened by it (an estimate, "
                "not a bound)")

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["beyond_rounding"] = self.beyond_rounding
        return to_jsonable(out)

    def __repr__(self) -> str:
        return (f"ProductError(bound={self.bound:.3g}, relative={self.relative:.3g}, side={self.side!r}, "
                f"beyond_rounding={self.beyond_rounding})")


def misses_tol(pe: ProductError, tol: float, value: float) -> bool:
    """Whether the products' estimated error ``pe`` withdraws the certificate of ``value``: beyond
    rounding and wider than ``tol·|value|``. NaN (not computed) and 0 (rank deficiency, kept as
    ``[0, bound]``) never miss."""
    return (pe.beyond_rounding and not math.isnan(value) and value != 0.0
            and not pe.bound <= tol * abs(value))


@dataclass(frozen=True, repr=False)
class PointProducts:
    """An autograd operator's two products as functions of the point they are taken at.

    ``forward(tensors, inputs, x) = A x`` and ``adjoint(tensors, inputs, y) = Aᵀ y`` for ``A`` linearised
    at ``tensors`` (the parameters) and ``inputs``; the stored point is ``(tensors, inputs)``. Operators
    built from others compose these (``GramOperator``: ``J(Jᵀ·)``), so that their error is measured on
    their own products (:func:`estimate_point_error`).
    """

    forward: Product
    adjoint: Product
    tensors: tuple[torch.Tensor, ...]
    inputs: tuple[Any, ...]
    what: str

    def transposed(self) -> PointProducts:
        """The products of ``Aᵀ``."""
        return PointProducts(self.adjoint, self.forward, self.tensors, self.inputs, self.what)

    def __repr__(self) -> str:
        return f"PointProducts({self.what!r}, {len(self.tensors)} tensors, {len(self.inputs)} inputs)"


def estimate_point_error(pp: PointProducts, shape: tuple[int, int]) -> ProductError:
    """:func:`estimate_product_error` of an operator of ``shape`` from its :class:`PointProducts`: on the
    larger side (``A x`` when ``m ≥ n``: module docstring), on ``Aᵀ y`` where forward AD fails."""
    m, n = shape
    if m >= n:
        try:
            return estimate_product_error(pp.forward, pp.tensors, pp.inputs, n, shape, "A·x", pp.what)
        except (RuntimeError, NotImplementedError):  # no forward AD through the function: the other side
            pass
    return estimate_product_error(pp.adjoint, pp.tensors, pp.inputs, m, shape, "Aᵀ·y", pp.what)


def perturb_ulps(t: Any, ulps: float, generator: torch.Generator) -> Any:
    """``t·(1 + r·ulps·eps)``, ``r ~ U[-1, 1]`` componentwise, on the finite entries of a floating tensor;
    anything else (integers, booleans, non-tensors, ``±inf`` entries) unchanged."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.numel() == 0:
        return t
    eps = torch.finfo(t.dtype).eps
    r = torch.rand(t.shape, generator=generator, dtype=torch.float64).to(device=t.device, dtype=t.dtype)
    r = (2.0 * r - 1.0) * (ulps * eps)
    t = t.detach()
    return torch.where(torch.isfinite(t), t + t * r, t)


def estimate_product_error(
    product: Callable[[Sequence[torch.Tensor], tuple[Any, ...], torch.Tensor], torch.Tensor],
    tensors: Sequence[torch.Tensor],
    inputs: tuple[Any, ...],
    n_in: int,
    shape: tuple[int, int],
    side: str,
    what: str,
    *,
    seed: int = 7,
) -> ProductError:
    """:class:`ProductError` of ``product(tensors, inputs, x)`` (a product with ``x`` of length ``n_in``
    at the parameters ``tensors`` and the ``inputs``), against the same product at perturbed parameters
    and inputs. :data:`PROBES` pairs of products."""
    dtype, device = tensors[0].dtype, tensors[0].device
    g = torch.Generator().manual_seed(seed)
    measured, scale = 0.0, 0.0
    for _ in range(PROBES):
        x = torch.randn(n_in, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
        x = x / torch.linalg.vector_norm(x)
        ts = [perturb_ulps(t, PERTURBATION_ULPS, g) for t in tensors]
        ins = tuple(perturb_ulps(v, PERTURBATION_ULPS, g) for v in inputs)
        a = product(list(tensors), inputs, x).detach()  # with grad on: the path the products take
        b = product(ts, ins, x).detach()
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
            measured = math.inf
            continue
        # in float64 whatever the dtype: a float32 difference's squares may underflow
        measured = max(measured, float(torch.linalg.vector_norm((a - b).double())))
        scale = max(scale, float(torch.linalg.vector_norm(a.double())))
    eps = float(torch.finfo(dtype).eps)
    rounding = max(float(max(shape)), ROUNDING_ULPS) * eps * scale
    return ProductError(bound=SAFETY * measured, measured=measured, scale=scale, rounding=rounding, side=side,
                        probes=PROBES, ulps=PERTURBATION_ULPS, what=what)
