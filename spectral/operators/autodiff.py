"""Operators built from torch functions: Jacobian, Gram, Hessian and Gauss–Newton.

All act on the parameters flattened in dict order, ``θ = [vec(p_1); vec(p_2); …]``
(``vec`` = ``reshape(-1)``, row-major as in torch), and on ``vec(fn(params))``.

* :class:`JacobianOperator`: ``J = ∂ vec(fn(θ)) / ∂θ``; ``J x`` by ``torch.func.jvp``
  (forward mode), ``Jᵀ y`` by a ``torch.func.vjp`` function cached at construction (the
  linearisation point is fixed). Blocks use ``torch.func.vmap`` and fall back to a loop.
* :class:`GramOperator`: ``J Jᵀ`` (``side="outer"``, the empirical NTK Gram) or ``Jᵀ J``.
* :class:`HessianOperator`: ``∇²L(θ) x`` by forward-over-reverse (``jvp`` of ``grad``).
* :class:`GaussNewtonOperator`: ``Jᵀ H_L J`` with ``H_L = I`` (squared loss) by default.
* :func:`jacobian_gram`: dense ``J Jᵀ`` (or ``Jᵀ J``) by batched products.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from attncond.spectral.operators.base import LinearOp, same_device
from attncond.spectral.operators.explicit import as_operator
from attncond.spectral.operators.gram import gram_matrix
from attncond.spectral.operators.product_error import (
    PERTURBATION_ULPS,
    PROBES,
    SAFETY,
    PointProducts,
    perturb_ulps,
)


def _check_params(params: Mapping[str, torch.Tensor]) -> tuple[list[str], list[torch.Tensor]]:
    if not isinstance(params, Mapping) or len(params) == 0:
        raise ValueError("params must be a non-empty dict of tensors")
    names = list(params)
    tensors = []
    for k in names:
        t = params[k]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"params[{k!r}] must be a floating torch tensor")
        if t.device.type == "meta":
            raise ValueError(f"params[{k!r}] is a meta tensor (shape only, no data); materialise it first")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"params[{k!r}] contains non-finite values ({int(torch.isnan(t).sum())} NaN, "
                             f"{int(torch.isinf(t).sum())} inf): the derivatives at that point are undefined")
        tensors.append(t.detach())
    dt, dev = tensors[0].dtype, tensors[0].device
    for k, t in zip(names, tensors, strict=True):
        if t.dtype != dt:
            raise ValueError(f"params[{k!r}] has dtype {t.dtype}, expected {dt}")
        if not same_device(t.device, dev):
            raise ValueError(f"device mismatch: params[{k!r}] on {t.device}, others on {dev}")
    return names, tensors

def check_params_used(fn: Callable[..., torch.Tensor], names: list[str], tensors: list[torch.Tensor],
                      inputs: tuple[Any, ...], what: str = "fn") -> None:
    """Refuse parameters that ``fn`` never reads (a misspelt name gives a structurally zero Jacobian
    block, which a solver would otherwise certify as rank deficiency).

    One forward and one backward pass with ``torch.autograd.grad(..., allow_unused=True)``: a
    parameter outside the autograd graph of the output is unused (``None``), whatever its
    numerical gradient. Functions that cannot run under autograd are not checked.
    """
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    try:
        with torch.enable_grad():
            out = fn(dict(zip(names, leaves, strict=True)), *inputs)
            if not isinstance(out, torch.Tensor):
                return
            if not out.requires_grad:
                grads: list[Any] = [None] * len(leaves)
            else:
                grads = list(torch.autograd.grad(out.sum(), leaves, allow_unused=True))
    except (RuntimeError, TypeError, NotImplementedError):  # functional-only code: cannot check
        return
    unused = [n for n, gr in zip(names, grads, strict=True) if gr is None]
    if unused:
        raise ValueError(
            f"{what} does not use the parameter(s) {unused} (not in its autograd graph): their Jacobian "
            f"columns would be identically zero. Misspelt names? Given: {names}")

#: the per-sample rows' random-probe check (:meth:`JacobianOperator._check_rows_on_a_probe`) allows this
#: many ulps of ``Σ_i ‖u_iᵀ J_i‖`` (batched and single-sample evaluation round differently)
SAMPLE_PROBE_ULPS = 1024.0

#: two evaluations of a deterministic function agree to this many ulps of its largest entry
#: (bitwise on the CPU; a GPU's reduction order may move the last bits)
DETERMINISM_ULPS = 64.0


def evaluate_with_grad(fn: Callable[..., Any], names: list[str], tensors: list[torch.Tensor],
                       inputs: tuple[Any, ...]) -> Any:
    """``fn`` at the parameters, on the code path the products take (autograd on the parameters), detached.
    A module may take another path without grad (``nn.MultiheadAttention``'s fused one) whose rounding
    differs from this one's."""
    with torch.enable_grad():
        out = fn(dict(zip(names, [t.detach().requires_grad_(t.is_floating_point()) for t in tensors],
                          strict=True)), *inputs)
    return out.detach() if isinstance(out, torch.Tensor) else out


def check_deterministic(fn: Callable[..., torch.Tensor], names: list[str], tensors: list[torch.Tensor],
                        inputs: tuple[Any, ...], reference: torch.Tensor, what: str = "fn") -> None:
    """Refuse a ``fn`` whose value at the same parameters and inputs changes between calls
    (dropout with ``training=True`` in the forward, Monte-Carlo sampling, ...): its Jacobian is not
    one matrix, so no certificate about it could be reproduced. One more forward pass, compared
    with ``reference`` (the first one) to :data:`DETERMINISM_ULPS` ulps of ``max |fn|``."""
    again = evaluate_with_grad(fn, names, tensors, inputs)
    if not isinstance(again, torch.Tensor) or again.shape != reference.shape:
        raise ValueError(f"{what} is not deterministic: a second evaluation returned "
                         f"{type(again).__name__} of shape {tuple(getattr(again, 'shape', ()))}, the first "
                         f"{tuple(reference.shape)}")
    ref = reference.detach()
    fin = torch.isfinite(ref) & torch.isfinite(again)
    scale = float(ref[fin].abs().max()) if bool(fin.any()) else 0.0
    tol = DETERMINISM_ULPS * torch.finfo(ref.dtype).eps * max(scale, torch.finfo(ref.dtype).tiny)
    same_nonfinite = bool(torch.equal(torch.isnan(ref), torch.isnan(again))) and bool(
        torch.equal(torch.where(torch.isinf(ref), ref, 0), torch.where(torch.isinf(again), again, 0)))
    diff = float((again[fin] - ref[fin]).abs().max()) if bool(fin.any()) else 0.0
    if diff > tol or not same_nonfinite:
        raise ValueError(
            f"{what} is not deterministic: two evaluations at the same parameters and inputs differ by "
            f"{diff:.3g} (tolerance {tol:.3g}); its Jacobian is not one matrix. Dropout or sampling in the "
            "forward (e.g. F.dropout(..., training=True), which eval() does not switch off)?")


def flatten_params(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``θ = [vec(p_1); vec(p_2); …]`` in dict order."""
    return torch.cat([t.detach().reshape(-1) for t in params.values()])

class _Flat:
    """Helpers to split a flat vector into the parameter shapes."""

    def __init__(self, names: list[str], tensors: list[torch.Tensor]) -> None:
        self.names = names
        self.shapes = [t.shape for t in tensors]
        self.numels = [t.numel() for t in tensors]
        self.n = sum(self.numels)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(c.reshape(s) for c, s in zip(torch.split(x, self.numels), self.shapes, strict=True))

    def cat(self, ts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in ts])

class _VmapMixin:
    _use_vmap: bool = True
    chunk: int = 128

    def _batched(self, f: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor) -> torch.Tensor:
        if self._use_vmap:
            try:
                outs = [
                    torch.func.vmap(f, in_dims=1, out_dims=1)(X[:, a : a + self.chunk])
                    for a in range(0, X.shape[1], self.chunk)
                ]
                return torch.cat(outs, dim=1)
            except Exception:  # noqa: BLE001 - some functions do not support vmap
                self._use_vmap = False
        return torch.stack([f(X[:, j]) for j in range(X.shape[1])], dim=1)

class JacobianOperator(_VmapMixin, LinearOp):
    """``J = ∂ vec(fn(params)) / ∂θ ∈ R^{m×p}`` at the given parameters.

    Parameters
    ----------
    fn : ``fn(params_dict, *inputs) -> Tensor`` of any shape (flattened to length ``m``),
        e.g. ``lambda p: model.functional(p, X)``.
    params : dict of tensors (the linearisation point); ``p = Σ numel``.
    inputs : optional tuple of extra positional arguments of ``fn``.
    vmap : batch block products with ``torch.func.vmap`` (falls back to a loop when
        ``fn`` does not support it).
    chunk : columns per vmapped batch.
    sample_dim : opt-in per-sample block structure. ``sample_dim=s`` declares that
        ``fn(params, *inputs)`` acts independently on the slices ``inputs[j].select(s, i)``
        (every input is a tensor with the same size ``N`` along ``s``; parameters shared)
        and that the output's leading dimension is that sample axis (so ``vec(fn)`` is
        sample-major: rows ``i·m_s … (i+1)·m_s − 1`` of ``J`` depend on sample ``i`` only).
        Then :meth:`jacobian_matrix`, :meth:`gram` and :meth:`to_dense` materialise ``J``
        by ``torch.func.vmap`` over samples of ``torch.func.jacrev`` of the single-sample
        function (``m_s = m/N`` VJPs per sample, each touching one sample only), instead
        of ``m`` VJPs through the whole batch. ``matvec``/``rmatvec`` are unchanged.
        The declaration is checked once at construction: ``fn`` on a probed sample alone (the
        first, the last, a random one) must equal its row block of ``fn`` on the batch, perturbing
        it must leave the other blocks unchanged, and, over every sample at once, ``uᵀJ`` of the
        batch must equal ``Σ_i u_iᵀ J_i`` for a random ``u``, each to rounding (ulps of the dtype, or
        where ``fn`` rounds more, e.g. attention on keys with a large common component, the measured
        change of ``fn`` and ``uᵀ J`` under a few-ulp perturbation of the point). ``fn`` must also be
        deterministic (two evaluations agree; checked for every ``JacobianOperator``). Where ``fn`` cannot run
        under ``vmap`` over samples (data-dependent control flow), rows are built one sample at
        a time.
    sample_chunk : samples per vmapped ``jacrev`` call (default: as many as fit in
        ``256 MiB`` of Jacobian rows); bounds the memory of the materialisation.
    """

    def __init__(
        self,
        fn: Callable[..., torch.Tensor],
        params: Mapping[str, torch.Tensor],
        inputs: tuple[Any, ...] | None = None,
        *,
        vmap: bool = True,
        chunk: int = 128,
        sample_dim: int | None = None,
        sample_chunk: int | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        names, tensors = _check_params(params)
        self._flat = _Flat(names, tensors)
        self._primals = tuple(tensors)
        inputs = tuple(inputs) if inputs is not None else ()
        self._fn = fn
        self._inputs = inputs
        check_params_used(fn, names, tensors, inputs, "JacobianOperator: fn")

        def f(*ts: torch.Tensor) -> torch.Tensor:
            return fn(dict(zip(names, ts, strict=True)), *inputs).reshape(-1)

        self._f = f
        out_full, self._vjp = torch.func.vjp(
            lambda *ts: fn(dict(zip(names, ts, strict=True)), *inputs), *self._primals
        )
        check_deterministic(fn, names, tensors, inputs, out_full, "JacobianOperator: fn")
        out = out_full.reshape(-1)
        self._out_shape = tuple(out_full.shape)
        vjp_full = self._vjp
        self._vjp = lambda y: vjp_full(y.reshape(self._out_shape))
        self.output = out.detach()
        super().__init__(
            (out.numel(), self._flat.n), tensors[0].dtype, tensors[0].device, name="JacobianOperator"
        )
        self._use_vmap = bool(vmap)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
        self.chunk = int(chunk)
        self.sample_dim: int | None = None
        self.n_samples: int | None = None
        self.sample_chunk: int | None = None
        self._sample_rounding: tuple[float, float] | None = None
        if sample_dim is not None:
            self._setup_samples(sample_dim, sample_chunk, out_full)
        elif sample_chunk is not None:
            raise ValueError("sample_chunk needs sample_dim")

    # ------------------------------------------------------------ per-sample structure
    def _setup_samples(self, sample_dim: Any, sample_chunk: Any, out_full: torch.Tensor) -> None:
        if isinstance(sample_dim, bool) or not isinstance(sample_dim, int):
            raise TypeError(f"sample_dim must be an int or None, got {sample_dim!r}")
        if not self._inputs:
            raise ValueError("sample_dim needs inputs=(X, ...): the per-sample tensors to split")
        sizes = set()
        for j, x in enumerate(self._inputs):
            if not isinstance(x, torch.Tensor):
                raise TypeError(
                    f"with sample_dim every input must be a tensor; inputs[{j}] is {type(x).__name__}"
                )
            if not -x.ndim <= sample_dim < x.ndim:
                raise ValueError(
                    f"sample_dim={sample_dim} out of range for inputs[{j}] of shape {tuple(x.shape)}"
                )
            sizes.add(int(x.shape[sample_dim]))
        if len(sizes) != 1:
            raise ValueError(
                f"inputs disagree on the number of samples along dim {sample_dim}: {sorted(sizes)}"
            )
        N = sizes.pop()
        if N < 1 or out_full.ndim == 0 or out_full.shape[0] != N:
            raise ValueError(
                f"sample_dim: fn's output must have the sample axis first (size {N}); "
                f"got output shape {tuple(out_full.shape)}"
            )
        self.sample_dim = sample_dim
        self.n_samples = N
        self._sample_vmap = True
        m_s = self.shape[0] // N
        item = torch.finfo(self.dtype).bits // 8
        if sample_chunk is None:
            sample_chunk = max(1, (256 * 1024**2) // max(1, m_s * self.shape[1] * item))
        if isinstance(sample_chunk, bool) or not isinstance(sample_chunk, int) or sample_chunk < 1:
            raise ValueError(f"sample_chunk must be a positive integer, got {sample_chunk!r}")
        self.sample_chunk = int(min(sample_chunk, N))
        self._check_independent(out_full)

    def _check_independent(self, out_full: torch.Tensor, n_probe: int = 3) -> None:
        """Check the ``sample_dim`` declaration on up to ``n_probe`` samples ``j`` (first, last, a
        random one): ``fn`` on sample ``j`` alone must reproduce row block ``j`` of the batch, and
        perturbing sample ``j`` must leave every other row block unchanged. The tolerance is
        ``64·eps·max|fn|`` of the dtype (float32: ``7.6e-6`` relative; an honest one-ulp difference
        between batched and single-sample evaluation passes), or, where that is exceeded, the rounding
        level of ``fn`` itself, measured (:meth:`_rounding_change`): inputs with a large common
        component round ``fn`` far above ``eps·max|fn|``."""
        d, N = self.sample_dim, int(self.n_samples or 0)
        assert d is not None
        ref = out_full.detach().reshape(N, -1)
        strict = 64.0 * torch.finfo(self.dtype).eps * max(float(ref.abs().max()), torch.finfo(self.dtype).tiny)
        g = torch.Generator().manual_seed(12345)
        probes = sorted({0, N - 1, int(torch.randint(N, (1,), generator=g))})[:n_probe]
        names = self._flat.names
        for j in probes:
            y = self._single(self._primals, *(x.narrow(d, j, 1).squeeze(d) for x in self._inputs)).detach()
            diff = float((y - ref[j]).abs().max()) if y.shape == ref[j].shape else math.inf
            tol, how = self._sample_tolerance(diff, strict, 0, "64 ulps of max|fn|")
            if not diff <= tol:
                raise ValueError(
                    f"sample_dim={d}: fn on sample {j} alone does not reproduce row block {j} of fn on the "
                    f"batch (max difference {diff:.3g}, tolerance {tol:.3g}: {how}); fn does not act "
                    "independently per sample along this dimension")
            if N < 2:
                continue
            pert = []
            for x in self._inputs:
                xp = x.detach().clone()
                sl = xp.narrow(d, j, 1)
                if xp.is_floating_point():  # finite entries only (a -inf mask entry stays -inf)
                    sl.copy_(torch.where(torch.isfinite(sl), sl + (1.0 + sl.abs()) * 0.125, sl))
                pert.append(xp)
            with torch.no_grad():
                yp = self._fn(dict(zip(names, self._primals, strict=True)), *pert).reshape(N, -1)
            others = torch.cat([yp[:j], yp[j + 1:]]) - torch.cat([ref[:j], ref[j + 1:]])
            change = float(others.abs().max())
            tol, how = self._sample_tolerance(change, strict, 0, "64 ulps of max|fn|")
            if not change <= tol:
                raise ValueError(
                    f"sample_dim={d}: perturbing sample {j} changes the output of other samples (max change "
                    f"{change:.3g} > tolerance {tol:.3g}: {how}); fn couples samples along this dimension")
        self._check_rows_on_a_probe()

    def _probe_cotangent(self) -> torch.Tensor:
        """The random ``u`` (length ``m``, seeded) of the per-sample rows' probe check."""
        g = torch.Generator().manual_seed(2024)
        return torch.randn(self.shape[0], generator=g, dtype=torch.float64).to(self.dtype).to(self.device)

    def _rounding_change(self) -> tuple[float, float]:
        """The rounding level of the two quantities the ``sample_dim`` checks compare, measured as
        :meth:`product_error` measures the products' (module :mod:`~attncond.spectral.operators.product_error`):
        the largest change of ``fn`` on the batch (max entry) and of ``uᵀ J`` of the batch (2-norm, ``u``
        the probe's cotangent) over ``PROBES`` points whose floating parameters and inputs are perturbed
        componentwise by ``PERTURBATION_ULPS`` ulps. A non-finite evaluation is skipped. Measured once
        (``PROBES`` batched VJPs), only where a check exceeds its rounding-level tolerance."""
        if self._sample_rounding is None:
            names, u = self._flat.names, self._probe_cotangent()
            f0 = self.output.double()
            v0 = self._flat.cat(self._vjp(u)).detach().double()
            g = torch.Generator().manual_seed(7)
            df = dv = 0.0
            for _ in range(PROBES):
                ts = [perturb_ulps(t, PERTURBATION_ULPS, g) for t in self._primals]
                ins = tuple(perturb_ulps(x, PERTURBATION_ULPS, g) for x in self._inputs)
                out, pull = torch.func.vjp(
                    lambda *a, ins=ins: self._fn(dict(zip(names, a, strict=True)), *ins).reshape(-1), *ts)
                f1 = out.detach().double()
                v1 = self._flat.cat(pull(u)).detach().double()
                if f1.shape == f0.shape and bool(torch.isfinite(f1).all()):
                    df = max(df, float((f1 - f0).abs().max()))
                if bool(torch.isfinite(v1).all()):
                    dv = max(dv, float(torch.linalg.vector_norm(v1 - v0)))
            self._sample_rounding = (df, dv)
        return self._sample_rounding

    def _sample_tolerance(self, diff: float, strict: float, which: int, strict_how: str) -> tuple[float, str]:
        """The tolerance of a ``sample_dim`` check and what it is: ``strict`` (rounding level in ulps,
        ``strict_how``) where ``diff`` meets it, else the larger of ``strict`` and ``2·SAFETY`` times
        the measured rounding change (:meth:`_rounding_change`; ``which`` 0: of ``fn``, 1: of ``uᵀ J``):
        the two evaluations compared each carry that rounding error."""
        if diff <= strict:
            return strict, strict_how
        eta = self._rounding_change()[which]
        what = "fn" if which == 0 else "u^T J"
        measured = 2.0 * SAFETY * eta
        how = (f"the larger of {strict_how} ({strict:.3g}) and 2x{SAFETY:g}x the change of {what} on the batch "
               f"under {PERTURBATION_ULPS:g}-ulp perturbations of the parameters and inputs ({measured:.3g})")
        return max(strict, measured), how

    def _check_rows_on_a_probe(self) -> None:
        """Every sample at once: ``uᵀ J`` of the batched ``fn`` must equal ``Σ_i u_iᵀ J_i`` of the
        single-sample function for a random ``u``, to :data:`SAMPLE_PROBE_ULPS` ulps of ``Σ_i ‖u_iᵀ J_i‖``
        or, where that is exceeded, to the measured rounding level of ``uᵀ J`` (:meth:`_sample_tolerance`:
        a stock ``nn.MultiheadAttention`` on keys with a large common component rounds its products far
        above ulps of their size). Rows of ``J`` that the per-sample route would get wrong (``fn`` couples
        samples anywhere, not only among the probed ones above) change that sum with probability one. One
        batched VJP and ``N`` single-sample ones."""
        N, d = int(self.n_samples or 0), self.sample_dim
        assert d is not None
        u = self._probe_cotangent()
        batched = self._flat.cat(self._vjp(u)).detach()
        U = u.reshape(N, -1)
        total = torch.zeros_like(batched)
        scale = 0.0
        c = int(self.sample_chunk or 1)
        for a in range(0, N, c):
            b = min(N, a + c)
            per = self._sample_vjps(U[a:b], tuple(x.narrow(d, a, b - a) for x in self._inputs))
            total += per.sum(0)
            scale += float(torch.linalg.vector_norm(per, dim=1).sum())
        diff = float(torch.linalg.vector_norm((total - batched).double()))
        strict = SAMPLE_PROBE_ULPS * torch.finfo(self.dtype).eps * max(scale, torch.finfo(self.dtype).tiny)
        tol, how = self._sample_tolerance(diff, strict, 1, f"{SAMPLE_PROBE_ULPS:g} ulps of sum_i |u_i^T J_i|")
        if not diff <= tol:
            raise ValueError(
                f"sample_dim={d}: the per-sample Jacobian rows disagree with fn on the batch (random probe "
                f"u: |u^T J_batch - sum_i u_i^T J_i| = {diff:.3g} > tolerance {tol:.3g}: {how}); fn couples "
                "samples along this dimension")

    def _sample_vjps(self, U: torch.Tensor, xs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``(b, p)``: ``u_iᵀ J_i`` for the samples of ``xs`` (sample axis ``sample_dim``), vmapped over
        samples, or one at a time where ``fn`` does not support ``vmap`` (data-dependent control flow)."""
        d = self.sample_dim
        assert d is not None

        def one(ui: torch.Tensor, *xi: torch.Tensor) -> torch.Tensor:
            _, pull = torch.func.vjp(lambda *ts: self._single(ts, *xi), *self._primals)
            return self._flat.cat(pull(ui))

        if self._sample_vmap:
            try:
                return torch.func.vmap(one, in_dims=(0,) + (d,) * len(xs))(U, *xs).detach()
            except Exception:  # noqa: BLE001 - fn does not support vmap: one sample at a time
                self._sample_vmap = False
        return torch.stack([one(U[i], *(x.select(d, i) for x in xs)) for i in range(U.shape[0])]).detach()

    def _single(self, ts: tuple[torch.Tensor, ...], *xs: torch.Tensor) -> torch.Tensor:
        """Single-sample function ``θ ↦ vec(fn(θ, x_i))`` (``x_i`` re-expanded to a batch of 1)."""
        d = self.sample_dim
        assert d is not None
        out = self._fn(dict(zip(self._flat.names, ts, strict=True)), *(x.unsqueeze(d) for x in xs))
        return out.reshape(-1)

    def _sample_block(self, a: int, b: int) -> torch.Tensor:
        """Rows of ``J`` for samples ``a … b−1``: vmap over samples of jacrev of the single-sample fn, or
        jacrev one sample at a time where ``fn`` does not support ``vmap`` over samples (data-dependent
        control flow such as ``if not torch.isfinite(x).all(): raise``), or, where ``jacrev`` fails too,
        one VJP per row."""
        d = self.sample_dim
        assert d is not None
        xs = tuple(x.narrow(d, a, b - a) for x in self._inputs)
        rows = (b - a) * (self.shape[0] // (self.n_samples or 1))
        jac = None
        if self._sample_vmap:
            try:
                jac = torch.func.vmap(
                    torch.func.jacrev(self._single, argnums=0),
                    in_dims=(None,) + (d,) * len(xs),
                )(self._primals, *xs)
            except Exception:  # noqa: BLE001 - fn does not support vmap over samples
                self._sample_vmap = False
        if jac is None:
            per = [self._single_jacobian(tuple(x.select(d, i) for x in xs)) for i in range(b - a)]
            block = torch.cat(per, dim=0).detach()
        else:
            block = torch.cat([t.reshape(rows, -1) for t in jac], dim=1).detach()
        return self.scale_output(block, 1.0, f"operator {self.name}: per-sample Jacobian rows {a}..{b - 1}")

    def _single_jacobian(self, xi: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``J_i`` (``m_s × p``) of one sample without ``vmap`` over samples: ``jacrev``, or one VJP per
        row where its own vmap over cotangents fails."""
        try:
            jac = torch.func.jacrev(self._single, argnums=0)(self._primals, *xi)
            return torch.cat([t.reshape(t.shape[0], -1) for t in jac], dim=1)
        except Exception:  # noqa: BLE001 - a backward jacrev cannot vmap: row by row
            out, pull = torch.func.vjp(lambda *ts: self._single(ts, *xi), *self._primals)
            eye = torch.eye(out.numel(), dtype=out.dtype, device=out.device)
            return torch.stack([self._flat.cat(pull(eye[r])) for r in range(out.numel())])

    def _require_samples(self, what: str) -> int:
        if self.sample_dim is None or self.n_samples is None or self.sample_chunk is None:
            raise ValueError(f"{what} needs the per-sample structure: construct with sample_dim=")
        return self.n_samples

    def _rows(self, a: int, b: int) -> torch.Tensor:
        """Rows of ``J`` for samples ``a … b−1``, built in ``sample_chunk`` pieces."""
        c = int(self.sample_chunk or 1)
        if b - a <= c:
            return self._sample_block(a, b)
        m_s = self.shape[0] // (self.n_samples or 1)
        # preallocated and filled chunk by chunk: peak = the rows + one chunk (no torch.cat copy)
        out = torch.empty((b - a) * m_s, self.shape[1], dtype=self.dtype, device=self.device)
        for s in range(a, b, c):
            e = min(s + c, b)
            out[(s - a) * m_s : (e - a) * m_s] = self._sample_block(s, e)
        return out

    def jacobian_matrix(self) -> torch.Tensor:
        """Dense ``J`` (``m×p``) by per-sample ``jacrev`` under ``vmap`` (needs ``sample_dim``).

        Not counted in :attr:`n_products` (no product with ``J`` is formed); the cost is
        ``m_s = m/N`` reverse passes per sample, i.e. about ``m_s`` full-batch VJPs.
        """
        N = self._require_samples("jacobian_matrix()")
        return self._rows(0, N)

    def gram(self, side: str = "outer", *, max_bytes: int = 4 * 1024**3) -> torch.Tensor:
        """Dense ``J Jᵀ`` (``side="outer"``, ``m×m``) or ``Jᵀ J`` (``"inner"``, ``p×p``) from
        per-sample Jacobian blocks (needs ``sample_dim``).

        If the whole ``J`` fits in ``max_bytes`` it is materialised (:meth:`jacobian_matrix`)
        and ``G`` is one BLAS ``syrk`` (:func:`spectral.operators.gram.gram_matrix`). Otherwise
        ``Jᵀ J = Σ_a J_aᵀ J_a`` is accumulated over sample
        chunks (inner), and the outer Gram is formed block-row by block-row: a block ``J_a``
        of as many samples as fit in ``max_bytes`` less one streaming chunk is held,
        ``G[a, a] = J_a J_aᵀ``, and the later samples are streamed in chunks ``J_c``
        (``sample_chunk``, at most ``max_bytes/4``) for ``G[a, c] = J_a J_cᵀ``. With ``b``
        blocks this computes ``(b + 1)/2`` times the rows of ``J`` (1.5× for two blocks);
        peak memory ``≈ max_bytes`` plus ``G``. The result is exactly symmetric.
        """
        if side not in ("outer", "inner"):
            raise ValueError(f"unknown side {side!r}; known: 'outer', 'inner'")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        N = self._require_samples("gram()")
        m, p = self.shape
        m_s = m // N
        item = torch.finfo(self.dtype).bits // 8
        if m * p * item <= max_bytes:
            return gram_matrix(self.jacobian_matrix(), side)
        if side == "inner":
            G = torch.zeros(p, p, dtype=self.dtype, device=self.device)
            c = int(self.sample_chunk or 1)
            for a in range(0, N, c):
                Ja = self._sample_block(a, min(a + c, N))
                G += gram_matrix(Ja, "inner")
            return G
        row_bytes = max(1, m_s * p * item)
        sc = max(1, min(int(self.sample_chunk or 1), (max_bytes // 4) // row_bytes))
        blk = max(1, (max_bytes - sc * row_bytes) // row_bytes)
        G = torch.empty(m, m, dtype=self.dtype, device=self.device)
        for a in range(0, N, blk):
            a1 = min(a + blk, N)
            Ja = self._rows(a, a1)
            G[a * m_s : a1 * m_s, a * m_s : a1 * m_s] = gram_matrix(Ja)
            for b in range(a1, N, sc):  # the later samples, streamed in chunks
                b1 = min(b + sc, N)
                G_ab = Ja @ self._sample_block(b, b1).T
                G[a * m_s : a1 * m_s, b * m_s : b1 * m_s] = G_ab
                G[b * m_s : b1 * m_s, a * m_s : a1 * m_s] = G_ab.T
            del Ja
        return G  # exactly symmetric: symmetric diagonal blocks, mirrored off-diagonal ones

    def to_dense(self, max_entries: int = 50_000_000) -> torch.Tensor:
        """Dense ``J``; per-sample ``jacrev`` when ``sample_dim`` is set, else ``p`` products."""
        if self.sample_dim is None:
            return super().to_dense(max_entries)
        if self.shape[0] * self.shape[1] > max_entries:
            raise ValueError(f"to_dense: {self.shape[0]}x{self.shape[1]} exceeds max_entries={max_entries}")
        return self.jacobian_matrix()

    @property
    def param_names(self) -> list[str]:
        return list(self._flat.names)

    def point_products(self) -> PointProducts:
        """``J v`` (``torch.func.jvp``) and ``Jᵀ u`` (``torch.func.vjp``) as functions of the parameters and
        inputs, for :meth:`product_error` (module :mod:`attncond.spectral.operators.product_error`): measured
        on ``J v`` when ``m ≥ p`` (on ``Jᵀ u`` where forward AD fails), on ``Jᵀ u`` otherwise."""
        names, fn, flat = self._flat.names, self._fn, self._flat

        def out(ts: Sequence[torch.Tensor], ins: tuple[Any, ...]) -> torch.Tensor:
            return fn(dict(zip(names, ts, strict=True)), *ins).reshape(-1)

        def jv(ts: Sequence[torch.Tensor], ins: tuple[Any, ...], x: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(lambda *a: out(a, ins), tuple(ts), flat.split(x))[1]

        def vj(ts: Sequence[torch.Tensor], ins: tuple[Any, ...], y: torch.Tensor) -> torch.Tensor:
            return flat.cat(torch.func.vjp(lambda *a: out(a, ins), *ts)[1](y))

        return PointProducts(jv, vj, self._primals, self._inputs, "autograd (JacobianOperator)")

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(self._f, self._primals, self._flat.split(x))[1]

    def _rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        return self._flat.cat(self._vjp(y))

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        return self._batched(self._matvec, X)

    def _rmatmat(self, Y: torch.Tensor) -> torch.Tensor:
        return self._batched(self._rmatvec, Y)

class GramOperator(LinearOp):
    """``J Jᵀ`` (``side="outer"``, ``m×m``) or ``Jᵀ J`` (``side="inner"``, ``p×p``).

    Symmetric positive semidefinite; each product costs one ``J`` and one ``Jᵀ`` product
    (counted on ``J`` as well). Its eigenvalues are ``σ_i(J)²``: use it for PL constants
    ``μ = λ_min(J Jᵀ)`` but compute ``σ_min(J)`` on ``J`` itself (squaring loses
    ``eps·κ²`` relative accuracy).
    """

    def __init__(self, J: Any, side: str = "outer") -> None:
        if side not in ("outer", "inner"):
            raise ValueError(f"unknown side {side!r}; known: 'outer', 'inner'")
        self.J = as_operator(J)
        self.side = side
        d = self.J.shape[0] if side == "outer" else self.J.shape[1]
        super().__init__((d, d), self.J.dtype, self.J.device, name=f"GramOperator[{side}]")

    def point_products(self) -> PointProducts | None:
        """``J(Jᵀ v)`` (or ``Jᵀ(J v)``) at a point, composed from ``J``'s own (``None`` when ``J`` has no
        point): the Gram's error is measured on the Gram's products, which a bound composed from ``J``'s
        error (``≤ 2‖J‖·‖E‖ + ‖E‖²``) would need ``‖J‖`` for."""
        jp = self.J.point_products()
        if jp is None:
            return None
        first, second = (jp.adjoint, jp.forward) if self.side == "outer" else (jp.forward, jp.adjoint)

        def gv(ts: Sequence[torch.Tensor], ins: tuple[Any, ...], x: torch.Tensor) -> torch.Tensor:
            return second(ts, ins, first(ts, ins, x))

        return PointProducts(gv, gv, jp.tensors, jp.inputs, f"{jp.what} Gram ({self.side})")

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        if self.side == "outer":
            return self.J.matvec(self.J.rmatvec(x))
        return self.J.rmatvec(self.J.matvec(x))

    _rmatvec = _matvec

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        if self.side == "outer":
            return self.J.matmat(self.J.rmatmat(X))
        return self.J.rmatmat(self.J.matmat(X))

    _rmatmat = _matmat

class HessianOperator(_VmapMixin, LinearOp):
    """``H = ∇²_θ L(θ)`` by forward-over-reverse: ``H x = jvp(grad L, (θ,), (x,))``.

    ``loss_fn(params_dict, *inputs) -> scalar``. Symmetric, so ``rmatvec = matvec``.
    """

    def __init__(
        self,
        loss_fn: Callable[..., torch.Tensor],
        params: Mapping[str, torch.Tensor],
        inputs: tuple[Any, ...] | None = None,
        *,
        vmap: bool = True,
        chunk: int = 64,
    ) -> None:
        names, tensors = _check_params(params)
        self._flat = _Flat(names, tensors)
        self._primals = tuple(tensors)
        inputs = tuple(inputs) if inputs is not None else ()
        check_params_used(loss_fn, names, tensors, inputs, "HessianOperator: loss_fn")

        def L(ts: tuple[torch.Tensor, ...]) -> torch.Tensor:
            out = loss_fn(dict(zip(names, ts, strict=True)), *inputs)
            if out.numel() != 1:
                raise ValueError("loss_fn must return a scalar")
            return out.reshape(())

        def L_named(p: Mapping[str, torch.Tensor]) -> torch.Tensor:
            return L(tuple(p[k] for k in names))

        first = evaluate_with_grad(L_named, names, tensors, ())
        check_deterministic(L_named, names, tensors, (), first, "HessianOperator: loss_fn")
        grad = torch.func.grad(L)
        self._g = lambda *ts: grad(ts)
        self._loss_fn, self._inputs = loss_fn, inputs
        super().__init__(
            (self._flat.n, self._flat.n), tensors[0].dtype, tensors[0].device, name="HessianOperator"
        )
        self._use_vmap = bool(vmap)
        self.chunk = int(chunk)

    def point_products(self) -> PointProducts:
        """``H x`` (forward-over-reverse) as a function of the parameters and inputs (``Hᵀ = H``), for
        :meth:`product_error`."""
        names, loss_fn, flat = self._flat.names, self._loss_fn, self._flat

        def hv(ts: Sequence[torch.Tensor], ins: tuple[Any, ...], x: torch.Tensor) -> torch.Tensor:
            def L(*a: torch.Tensor) -> torch.Tensor:
                return loss_fn(dict(zip(names, a, strict=True)), *ins).reshape(())

            g = torch.func.grad(L, argnums=tuple(range(len(ts))))
            return flat.cat(torch.func.jvp(lambda *a: g(*a), tuple(ts), flat.split(x))[1])

        return PointProducts(hv, hv, self._primals, self._inputs, "autograd (HessianOperator)")

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self._flat.cat(torch.func.jvp(self._g, self._primals, self._flat.split(x))[1])

    _rmatvec = _matvec

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        return self._batched(self._matvec, X)

    _rmatmat = _matmat

class GaussNewtonOperator(LinearOp):
    """``G = Jᵀ H_L J`` (generalised Gauss–Newton), ``J`` the Jacobian of ``fn``.

    ``loss_hessian``: ``None`` means ``H_L = I`` (loss ``½‖f − y‖²``); otherwise anything
    :func:`as_operator` accepts of shape ``(m, m)`` (a symmetric PSD matrix or operator).
    """

    def __init__(
        self,
        fn: Callable[..., torch.Tensor],
        params: Mapping[str, torch.Tensor],
        loss_hessian: Any = None,
        inputs: tuple[Any, ...] | None = None,
    ) -> None:
        self.J = JacobianOperator(fn, params, inputs)
        m, p = self.J.shape
        self.H = None
        if loss_hessian is not None:
            self.H = as_operator(loss_hessian, dtype=self.J.dtype, device=self.J.device)
            if self.H.shape != (m, m):
                raise ValueError(f"loss_hessian must have shape {(m, m)}, got {self.H.shape}")
        super().__init__((p, p), self.J.dtype, self.J.device, name="GaussNewtonOperator")

    def _mid(self, Y: torch.Tensor) -> torch.Tensor:
        return Y if self.H is None else self.H.matvec(Y)

    def point_products(self) -> PointProducts:
        """``Jᵀ H_L (J x)`` at a point, from ``J``'s point products; ``H_L`` is held fixed (its own products
        are taken as exact)."""
        jp = self.J.point_products()
        H = self.H

        def gv(ts: Sequence[torch.Tensor], ins: tuple[Any, ...], x: torch.Tensor) -> torch.Tensor:
            y = jp.forward(ts, ins, x)
            if H is not None:
                y = H.matvec(y)
            return jp.adjoint(ts, ins, y)

        return PointProducts(gv, gv, jp.tensors, jp.inputs, f"{jp.what} Gauss–Newton")

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self.J.rmatvec(self._mid(self.J.matvec(x)))

    _rmatvec = _matvec

    def _matmat(self, X: torch.Tensor) -> torch.Tensor:
        return self.J.rmatmat(self._mid(self.J.matmat(X)))

    _rmatmat = _matmat

def jacobian_gram(
    J: Any, side: str = "outer", *, chunk: int = 256, max_bytes: int = 2 * 1024**3
) -> torch.Tensor:
    """Dense ``G = J Jᵀ`` (``side="outer"``) or ``Jᵀ J`` (``"inner"``) by batched products.

    Outer: rows of ``J`` are obtained as ``Jᵀ E_c`` for identity blocks ``E_c`` of
    ``chunk`` columns (vmapped VJPs). If all of ``Jᵀ`` fits in ``max_bytes`` it is stored and
    ``G = (Jᵀ)ᵀ Jᵀ`` is one GEMM (``m`` products); otherwise ``G[:, c] = J (Jᵀ E_c)`` is
    streamed (``2m`` products, ``O(p·chunk)`` memory). Inner is the same with ``J E_c``.
    The result is symmetrised, ``(G + Gᵀ)/2``.
    """
    op = as_operator(J)
    if side not in ("outer", "inner"):
        raise ValueError(f"unknown side {side!r}; known: 'outer', 'inner'")
    m, p = op.shape
    d, other = (m, p) if side == "outer" else (p, m)
    first = op.rmatmat if side == "outer" else op.matmat
    second = op.matmat if side == "outer" else op.rmatmat
    item = torch.finfo(op.dtype).bits // 8
    store = d * other * item <= max_bytes
    blocks = []
    G = torch.empty(d, d, dtype=op.dtype, device=op.device)
    for a in range(0, d, chunk):
        b = min(a + chunk, d)
        E = torch.zeros(d, b - a, dtype=op.dtype, device=op.device)
        E[torch.arange(a, b), torch.arange(b - a)] = 1.0
        F = first(E)
        if store:
            blocks.append(F)
        else:
            G[:, a:b] = second(F)
    if store:
        return gram_matrix(torch.cat(blocks, dim=1), "inner")
    return 0.5 * (G + G.T)
