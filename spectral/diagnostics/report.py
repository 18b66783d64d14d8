r"""Conditioning diagnostics of the attention models (MATH.md §4, §5 claims 1, 3, 6).

=====================================  ==========================================================
function                               quantity
=====================================  ==========================================================
:func:`beta_paper`                     ``β = σ²_min(W^O) σ²_min(B0ᵀ)`` ([S24] Thm. 1, reconstructed)
:func:`pl_constant`                    ``μ = λ_min(J Jᵀ)`` exactly (structured NTK Gram), the
                                       corrected bound ``min_h σ²_min(W^O_h) σ²_min(B0ᵀ)``, ``β``,
                                       and which of the two bounds holds on the instance
:func:`attention_output_matrix`        ``κ(Z)``, ``σ_min``, ``σ_max`` of ``Z`` ([Q25]) with certified
                                       intervals, and Weyl's ``σ_min(Z^res) ≥ σ_min(X) − ‖AXW_V‖``
:func:`softmax_jacobian`               ``J(s) = diag(s) − s sᵀ`` (batched)
:func:`softmax_jacobian_spectrum`      eigenvalues of ``J(s)`` and ``κ = λ_n/λ_2`` on ``1^⊥``
:func:`hessian_extremes`               extreme Hessian eigenvalues by Lanczos on HVPs; smallest
                                       non-zero eigenvalue and the null-space dimension seen
:func:`attention_entropy`,             mean row entropy and fraction of coefficients ``≤ ε`` per head
:func:`attention_sparsity`
:func:`diagnose`                       all that apply to a model, as a :class:`Diagnostics`
=====================================  ==========================================================

Reconstructed/explicit choices (all switchable by argument):

* ``σ²_min(B0ᵀ)`` is ``λ_min(B0 B0ᵀ)``, i.e. the ``Nn``-th singular value squared: it is 0
  whenever ``HD < Nn`` (``B0`` cannot have full row rank).
* For ``d_out > 1`` the corrected bound uses ``σ_min(W^O_h)`` (the ``d_out``-th singular value
  of the ``d × d_out`` block); for ``d_out = 1`` that is ``‖W^O_h‖`` as in MATH.md.
* ``μ`` is "numerically zero" when ``μ ≤ zero_threshold = m·eps·‖G‖`` (``m`` the Gram size):
  the backward-error level of a symmetric eigensolver. ``attainable_accuracy = ‖G‖·eps``.
* A bound "holds" when ``bound ≤ μ + zero_threshold``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from attncond.models import AdaptedModel, AttentionBlock, MultiHeadAttention, kernel_variant
from attncond.models.checks import as_float_tensor, check_positive_float, check_subset
from attncond.spectral.diagnostics.attention_stats import AttentionStats, attention_stats
from attncond.spectral.diagnostics.b0 import BetaPaper, b0_conditioning, beta_paper
from attncond.spectral.diagnostics.hessian import HessianExtremes, hessian_extremes
from attncond.spectral.diagnostics.pl import PLConstant, pl_constant
from attncond.spectral.diagnostics.records import DiagnosticRow, Diagnostics, compute_or_undefined
from attncond.spectral.diagnostics.rows import row_order, row_spec
from attncond.spectral.diagnostics.softmax_jacobian import SoftmaxJacobianSpectrum, softmax_jacobian_spectrum
from attncond.spectral.diagnostics.z import ZConditioning, attention_output_matrix
from attncond.spectral.results import SpectralEstimate

_NAN = float("nan")


# --------------------------------------------------------------------------- diagnose
def _row(key: str, value: Any, interval: tuple[float, float] | None = None, note: str | None = None,
         **label_ctx: Any) -> DiagnosticRow:
    """A defined row; its label comes from :data:`ROWS` (an unknown key is an error)."""
    return DiagnosticRow(key, row_spec(key).make_label(**label_ctx), value, interval, True, note)


def _undef(key: str, reason: str, **label_ctx: Any) -> DiagnosticRow:
    """A row that does not apply or could not be computed, with the reason."""
    return DiagnosticRow(key, row_spec(key).make_label(**label_ctx), None, None, False, reason)


def _safe(rows: list[DiagnosticRow], keys: Sequence[str], fn: Callable[[], Any]) -> Any:
    """:func:`compute_or_undefined` with the labels of ``keys`` taken from :data:`ROWS`."""
    return compute_or_undefined(rows, [(k, row_spec(k).make_label()) for k in keys], fn)


def _est_rows(prefix: str, est: SpectralEstimate) -> list[DiagnosticRow]:
    return [
        _row(f"{prefix}.sigma_max", est.sigma_max, est.sigma_max_interval),
        _row(f"{prefix}.sigma_min", est.sigma_min, est.sigma_min_interval, note=est.reason),
        _row(f"{prefix}.kappa", est.cond, est.cond_interval,
             note="singular to working precision" if est.rank_deficient else None),
    ]


def diagnose(
    model: Any,
    X: Any = None,
    y: Any = None,
    *,
    trainable: Sequence[str] | None = None,
    residual: str = "both",
    hessian: bool | None = None,
    sparsity_eps: float = 1e-3,
    tol: float = 1e-10,
    spectra: bool = True,
) -> Diagnostics:
    """All diagnostics of MATH.md §4 that apply to ``model`` at inputs ``X`` (targets ``y``).

    Parameters
    ----------
    model : attncond.models.MultiHeadAttention, attncond.models.AttentionBlock or attncond.models.AdaptedModel
        An :class:`~attncond.models.AdaptedModel` (the user's own module, ``models.adapt``) goes to
        :func:`attncond.spectral.diagnostics.foreign.diagnose_adapted` (``X`` defaults to its
        example inputs; ``trainable`` may be parameter patterns; ``residual`` does not apply).
        [S24] model: ``B0`` (certified σ's and κ), ``β``, ``μ`` with the corrected bound and which
        bound holds, softmax-Jacobian spectrum, attention statistics and (with ``y``) Hessian
        extremes. [Q25] block: ``Z`` with and/or without residual, the Weyl bound, ``μ`` of the
        block output, softmax-Jacobian spectrum and attention statistics.
    X, y : inputs ``(N, n, D)`` and optional targets.
    trainable : parameters ``J`` is taken with respect to (default: the model's).
    residual : {"both", "on", "off"}
        Which ``Z`` of a block.
    hessian : bool or None
        Hessian extremes; ``None`` means "when ``y`` is given".
    sparsity_eps : float
        Threshold of the sparsity row.
    tol : float
        Relative tolerance of every certified estimate.
    spectra : bool
        Keep full singular-value/eigenvalue arrays for plotting.

    Returns
    -------
    Diagnostics
        Rows in :data:`ROWS` order. A diagnostic that is undefined for the model (``B0`` of a
        block, ``κ`` of a singular matrix, the softmax Jacobian of a Gaussian kernel) is a row
        with ``defined=False`` and the reason; it never aborts the report.

    Raises
    ------
    TypeError, ValueError
        Unsupported model, unknown ``residual``, invalid ``hessian``/``sparsity_eps``, bad inputs.
    """
    if isinstance(model, AdaptedModel):  # the user's own model: diagnostics/foreign.py
        from attncond.spectral.diagnostics.foreign import diagnose_adapted

        return diagnose_adapted(model, X, y, trainable=trainable, hessian=hessian, sparsity_eps=sparsity_eps,
                                tol=tol, spectra=spectra)
    if not isinstance(model, (MultiHeadAttention, AttentionBlock)):
        raise TypeError(f"model must be a models.MultiHeadAttention or models.AttentionBlock (attncond's own), "
                        f"or a models.AdaptedModel (wrap your own nn.Module with models.adapt(module, inputs, "
                        f"params=...)), got {type(model).__name__}")
    if X is None:
        raise ValueError("X (the inputs) is required for attncond's own models")
    if residual not in ("both", "on", "off"):
        raise ValueError(f"unknown residual {residual!r}; known: 'both', 'on', 'off'")
    if hessian is not None and not isinstance(hessian, bool):
        raise TypeError(f"hessian must be a bool or None, got {hessian!r}")
    check_positive_float("sparsity_eps", sparsity_eps)
    tol = check_positive_float("tol", tol)
    do_h = (y is not None) if hessian is None else hessian
    if do_h and y is None:
        raise ValueError("hessian=True needs targets y")
    t0 = time.perf_counter()
    Xt = model.check_inputs(X)
    is_mh = isinstance(model, MultiHeadAttention)
    if trainable is not None:
        trainable = check_subset("trainable", trainable, tuple(n for n, _ in model.named_parameters()))
    yt = None if y is None else check_targets(model, Xt, y)
    rows: list[DiagnosticRow] = []
    spec: dict[str, np.ndarray] = {}
    b0 = beta = hes = None
    zs: dict[str, ZConditioning] = {}
    if is_mh:
        b0, beta = _b0_rows(rows, spec, model, Xt, tol, spectra)
    else:
        mh_only = "defined for the [S24] MultiHeadAttention only (the model is an AttentionBlock)"
        rows += [_undef("b0.kappa", mh_only), _undef("beta_paper", mh_only)]
    pl = _pl_rows(rows, model, Xt, trainable, tol, is_mh, beta)
    if is_mh:
        rows.append(_undef("z.kappa", "Z is the [Q25] AttentionBlock output; the model is the "
                           "[S24] MultiHeadAttention"))
    else:
        zs = _z_rows(rows, spec, model, Xt, residual, tol, spectra)
    sj, att = _attention_rows(rows, spec, model, Xt, sparsity_eps, spectra)
    if do_h:
        hes = _hessian_rows(rows, model, Xt, yt, trainable, is_mh)
    else:
        rows.append(_undef("hessian.lambda_max", "no targets y given"))
    return Diagnostics(
        model=type(model).__name__, config=_config(model, Xt, trainable, is_mh),
        rows=tuple(sorted(rows, key=lambda r: row_order(r.key))), b0=b0, beta=beta, pl=pl, z=zs, softmax=sj,
        attention=att, hessian=hes, spectra=spec, seconds=time.perf_counter() - t0,
    )


def _spectrum(est: SpectralEstimate, M: torch.Tensor | None = None) -> np.ndarray:
    """All singular values for plotting: the dense route's own, else one ``svdvals`` of ``M``."""
    spec = getattr(est.details, "spectrum", None)
    if spec is not None:
        return np.asarray(spec)
    if M is None:
        return np.array([est.sigma_max, est.sigma_min])
    return torch.linalg.svdvals(M).cpu().numpy()


def _config(model: Any, Xt: torch.Tensor, trainable: Sequence[str] | None, is_mh: bool) -> dict[str, Any]:
    N, n, D = Xt.shape
    cfg: dict[str, Any] = {"kernel": model.kernel_name, "N": N, "n": n, "D": D, "d": model.d,
                           "regime": model.regime}
    if is_mh:
        cfg.update(H=model.H, value_param=model.value_param, d_out=model.d_out,
                   trainable=list(trainable or model.trainable))
    else:
        cfg.update(residual_model=model.residual, ffn=model.ffn)
    return cfg


def _b0_rows(rows: list[DiagnosticRow], spec: dict[str, np.ndarray], model: MultiHeadAttention,
             Xt: torch.Tensor,
             tol: float, spectra: bool) -> tuple[SpectralEstimate | None, BetaPaper | None]:
    """``B0`` (certified σ's and κ) and the paper's ``β`` ([S24] Thm. 1)."""
    N, n, D = Xt.shape

    b0 = _safe(rows, ["b0.kappa"], lambda: b0_conditioning(model, Xt, tol=tol))
    if b0 is None:
        return None, None
    if spectra:
        spec["B0"] = _spectrum(b0)
    rows.extend(_est_rows("b0", b0))
    if model.H * D < N * n:
        rows.append(_row("b0.full_row_rank", False, note=f"HD={model.H * D} < Nn={N * n}"))
    beta = _safe(rows, ["beta_paper"], lambda: beta_paper(model, Xt, b0=b0, tol=tol))
    if beta is not None:
        rows.append(_row("beta_paper", beta.value, beta.interval, note=beta.reason))
    return b0, beta


def _pl_rows(rows: list[DiagnosticRow], model: Any, Xt: torch.Tensor, trainable: Sequence[str] | None,
             tol: float, is_mh: bool, beta: BetaPaper | None) -> PLConstant | None:
    """``μ = λ_min(JJᵀ)`` and, for the [S24] model, the bounds next to it."""
    pl = _safe(rows, ["pl.mu"], lambda: pl_constant(model, Xt, trainable, tol=tol, beta=beta))
    if pl is None:
        return None
    rows.append(_row("pl.mu", pl.mu, pl.mu_interval,
                         note=(f"exactly zero: rank J <= {pl.rank_bound} < m; " if pl.rank_limited
                               else "numerically zero; " if pl.numerically_zero else "")
                         + f"route={pl.route}, {pl.eig_method}, m={pl.n_outputs}, p={pl.n_params}"))
    if not is_mh:
        return pl
    if pl.corrected_bound is None:
        rows.append(_undef("pl.corrected_bound", "W_V is not trained: the bound does not apply"))
    else:
        rows.append(_row("pl.corrected_bound", pl.corrected_bound))
        rows.append(_row("pl.corrected_holds", pl.holds["corrected_bound"]))
    rows.append(_row("pl.beta_holds", pl.holds["beta_paper"],
                         note=None if pl.holds["beta_paper"] else "the paper's β fails here"))
    if pl.value_block_mu is not None:
        rows.append(_row("pl.value_block_mu", pl.value_block_mu,
                         note="= σ²min(W_O)σ²min(B0ᵀ) exactly for the joint value map"))
    return pl


def _z_rows(rows: list[DiagnosticRow], spec: dict[str, np.ndarray], model: AttentionBlock, Xt: torch.Tensor,
            residual: str, tol: float, spectra: bool) -> dict[str, ZConditioning]:
    """``Z`` of [Q25] with and/or without residual, and the Weyl bound."""
    wanted = {"both": (True, False), "on": (True,), "off": (False,)}[residual]
    zs: dict[str, ZConditioning] = {}
    for r in wanted:
        tag = "res" if r else "plain"
        z = _safe(rows, [f"z.{tag}.kappa"], lambda r=r: attention_output_matrix(model, Xt, r, tol=tol))
        if z is None:
            continue
        zs[tag] = z
        if spectra and z.Z is not None:
            spec[f"Z_{tag}"] = _spectrum(z.estimate, z.Z)
        rows.extend(_est_rows(f"z.{tag}", z.estimate))
        if r:
            rows.append(_row("z.weyl_bound", z.weyl_bound, note=("holds" if z.weyl_holds else "VIOLATED")
                                 + ("; vacuous (negative)" if z.weyl_bound < 0 else "")))
    return zs


def _attention_rows(rows: list[DiagnosticRow], spec: dict[str, np.ndarray], model: Any, Xt: torch.Tensor,
                    sparsity_eps: float, spectra: bool
                    ) -> tuple[SoftmaxJacobianSpectrum | None, AttentionStats | None]:
    """Softmax-Jacobian spectrum (row-stochastic kernels only), entropy and sparsity."""
    S = model.attention(Xt).detach()
    kname = model.kernel_name
    row_stochastic = kernel_variant(kname, model.kernel_options).row_stochastic  # the KERNELS registry decides
    sj = None
    if row_stochastic:
        rows4 = S if S.ndim == 4 else S.unsqueeze(1)
        sj = _safe(rows, ["softmaxJ.kappa_median"], lambda: softmax_jacobian_spectrum(rows4))
        if sj is not None:
            rows.append(_row("softmaxJ.kappa_median", sj.kappa_median))
            rows.append(_row("softmaxJ.kappa_max", sj.kappa_max,
                                 note=f"{sj.n_singular} rows singular on 1⊥" if sj.n_singular else None))
            if spectra:
                spec["softmaxJ"] = np.sort(sj.eigenvalues_perp.reshape(-1))
    else:
        rows.append(_undef("softmaxJ.kappa_median", f"kernel {kname!r} is not a row softmax: no softmax "
                               "Jacobian"))
    normalize = not row_stochastic
    att = _safe(rows, ["attn.entropy"], lambda: attention_stats(S, sparsity_eps, normalize=normalize))
    if att is not None:
        note = "rows normalised to sum 1" if normalize else None
        rows.append(_row("attn.entropy", float(att.normalized_entropy.mean()), note=note))
        rows.append(_row("attn.sparsity", float(att.sparsity.mean()), note=note, eps=sparsity_eps))
    return sj, att


def check_targets(model: MultiHeadAttention | AttentionBlock, Xt: torch.Tensor, y: Any) -> torch.Tensor:
    """Targets ``y`` as a finite real tensor of the model's dtype and of the output's size, else an error
    naming ``y`` (before any work): ``N·n·d_out`` entries for the [S24] model (its loss reshapes them to
    ``(N, n, d_out)``), the shape ``(N, n, D)`` of the block output for [Q25] (its loss would broadcast)."""
    yt = as_float_tensor("y", y, dtype=Xt.dtype, device=Xt.device)
    N, n, D = Xt.shape
    if isinstance(model, MultiHeadAttention):
        if yt.numel() != N * n * model.d_out:
            raise ValueError(f"y must hold N·n·d_out = {N * n * model.d_out} targets (shape ({N}, {n}, "
                             f"{model.d_out}) or ({N}, {n})), got shape {tuple(yt.shape)}")
    elif tuple(yt.shape) != (N, n, D):
        raise ValueError(f"y must have the block output's shape ({N}, {n}, {D}), got {tuple(yt.shape)}")
    return yt


def _hessian_rows(rows: list[DiagnosticRow], model: Any, Xt: torch.Tensor, yt: torch.Tensor,
                  trainable: Sequence[str] | None, is_mh: bool) -> HessianExtremes | None:
    """Extreme Hessian eigenvalues of the model's loss at ``(X, y)`` (``yt`` from :func:`check_targets`)."""
    tr = tuple(trainable or model.trainable)
    params = {k: getattr(model, k).detach() for k in tr}
    hes = _safe(rows, ["hessian.lambda_max"],
                              lambda: hessian_extremes(lambda p: model.loss(p, Xt, yt), params))
    if hes is None:
        return None
    rows.append(_row("hessian.lambda_max", hes.lambda_max, hes.lambda_max_interval, note=hes.end_note()))
    rows.append(_row("hessian.lambda_min", hes.lambda_min, hes.lambda_min_interval,
                     note=hes.end_note("indefinite" if hes.indefinite else None)))
    if hes.smallest_nonzero is None:
        rows.append(_undef("hessian.smallest_nonzero", hes.reason or ""))
    else:
        rows.append(_row("hessian.smallest_nonzero", hes.smallest_nonzero))
    note = hes.method if hes.null_dim_exact else f"{hes.method}; a lower bound (Lanczos sees one copy of 0)"
    if is_mh and model.value_param == "per_head" and "W_V" in tr and "W_O" not in tr and model.d > model.d_out:
        flat = model.H * model.D * (model.d - model.d_out)
        note += f"; {flat} = H·D·(d−d_out) are flat: W_V,h acts only via W_V,h W_O,h"
    rows.append(_row("hessian.null_dim", hes.null_dim_seen, note=note))
    return hes
