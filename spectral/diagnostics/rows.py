"""ROWS: the one table of diagnostics rows (key, label, models it applies to, sweep column).

:func:`attncond.spectral.diagnostics.diagnose` emits only keys listed here for attncond's own
models (an unknown key is a ``KeyError``), the CLI table and ``--json`` list them in this order,
and ``attncond sweep`` takes its CSV metric columns from :attr:`RowSpec.column`. Adding a
diagnostic is one entry here plus the code in ``diagnose`` that computes it. Adapted (user)
models use the ``"adapted"`` entries for their fixed rows; their per-layer and per-head rows
(``layer.<name>.jac.*``, ``<layer>.h<k>.*``) are keyed by the model's own structure and are
not listed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RowSpec", "ROWS", "row_spec", "MODEL_KINDS", "sweep_columns"]

#: model kinds a row can apply to: the [S24] MultiHeadAttention, the [Q25] AttentionBlock and the
#: user's own model (models.AdaptedModel, diagnostics/foreign.py; its per-layer rows
#: ``layer.<L>.jac.*`` and per-head rows ``attn.<layer>.h<k>.*`` are made from the ``jac.*`` and
#: ``softmaxJ.*``/``attn.*`` entries with the layer and head in the key)
MODEL_KINDS = ("mh", "block", "adapted")


@dataclass(frozen=True)
class RowSpec:
    """One diagnostic row.

    ``label`` may hold ``{placeholders}`` filled when the row is made (e.g. ``{eps}``);
    ``applies_to`` lists :data:`MODEL_KINDS`; ``column`` is the sweep CSV column (``None``: not
    swept); ``table`` marks the rows of the CLI's kernel comparison table and ``table_note``
    those whose note that table shows.
    """

    key: str
    label: str
    applies_to: tuple[str, ...]
    column: str | None = None
    table: bool = False
    table_note: bool = False

    def make_label(self, **ctx: Any) -> str:
        return self.label.format(**ctx) if ctx else self.label


_MH, _BL, _BOTH, _AD = ("mh",), ("block",), ("mh", "block"), ("adapted",)

ROWS: tuple[RowSpec, ...] = (
    RowSpec("b0.sigma_max", "σ_max(B0)", _MH),
    RowSpec("b0.sigma_min", "σ_min(B0)", _MH, "sigma_min_B0", table=True),
    RowSpec("b0.kappa", "κ(B0)", _MH, "kappa_B0", table=True),
    RowSpec("b0.full_row_rank", "B0 full row rank possible (HD ≥ Nn)", _MH),
    RowSpec("beta_paper", "β_paper = σ²min(W_O)σ²min(B0ᵀ)", _MH, "beta_paper", table=True),
    RowSpec("pl.mu", "μ = λmin(JJᵀ)", _BOTH, "mu", table=True),
    RowSpec("pl.corrected_bound", "corrected bound min_h‖W_O,h‖²σ²min(B0ᵀ)", _MH, "corrected_bound",
            table=True),
    RowSpec("pl.corrected_holds", "corrected bound ≤ μ", _MH, "corrected_holds", table=True),
    RowSpec("pl.beta_holds", "β_paper ≤ μ", _MH, "beta_holds", table=True, table_note=True),
    RowSpec("pl.value_block_mu", "λmin(J_V J_Vᵀ)", _MH, table=True),
    RowSpec("z.kappa", "κ(Z)", _MH),
    RowSpec("z.res.sigma_max", "σ_max(Z res)", _BL),
    RowSpec("z.res.sigma_min", "σ_min(Z res)", _BL, "sigma_min_Z_res", table=True),
    RowSpec("z.res.kappa", "κ(Z res)", _BL, "kappa_Z_res", table=True),
    RowSpec("z.plain.sigma_max", "σ_max(Z plain)", _BL),
    RowSpec("z.plain.sigma_min", "σ_min(Z plain)", _BL, "sigma_min_Z_plain", table=True),
    RowSpec("z.plain.kappa", "κ(Z plain)", _BL, "kappa_Z_plain", table=True),
    RowSpec("z.weyl_bound", "Weyl: σmin(X) − ‖AXW_V‖ ≤ σmin(Z res)", _BL, "weyl_bound", table=True,
            table_note=True),
    RowSpec("softmaxJ.kappa_median", "κ(J(s)) on 1⊥, median over rows", _BOTH, "softmaxJ_kappa_median",
            table=True),
    RowSpec("softmaxJ.kappa_max", "κ(J(s)) on 1⊥, max over rows", _BOTH, "softmaxJ_kappa_max", table=True,
            table_note=True),
    RowSpec("attn.entropy", "attention entropy / log n (mean over heads)", _BOTH, "entropy", table=True),
    RowSpec("attn.sparsity", "fraction of coefficients ≤ {eps:g}", _BOTH, "sparsity", table=True),
    RowSpec("hessian.lambda_max", "Hessian λ_max", _BOTH, table=True),
    RowSpec("hessian.lambda_min", "Hessian λ_min", _BOTH, table=True),
    RowSpec("hessian.smallest_nonzero", "Hessian non-zero λ nearest 0", _BOTH, table=True),
    RowSpec("hessian.null_dim", "Hessian null-space dimension seen", _BOTH, table=True, table_note=True),
    RowSpec("adapter.eager", "eager attention / math SDPA backend", _AD),
    RowSpec("jac.sigma_max", "σ_max(J)", _AD),
    RowSpec("jac.sigma_min", "σ_min(J)", _AD),
    RowSpec("jac.kappa", "κ(J)", _AD),
    RowSpec("jac.null_dim", "null-space dimension of J", _AD),
    RowSpec("jac.sigma_min_nonzero", "smallest non-zero σ(J)", _AD),
    RowSpec("jac.kappa_nonzero", "σ_max/σ_min,nz(J)", _AD),
)

_BY_KEY = {r.key: r for r in ROWS}
_ORDER = {r.key: i for i, r in enumerate(ROWS)}
assert len(_BY_KEY) == len(ROWS), "duplicate key in ROWS"


def row_spec(key: str) -> RowSpec:
    """The :class:`RowSpec` of ``key`` (``KeyError`` naming the known keys otherwise)."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"no diagnostic row {key!r} in ROWS; known: {list(_BY_KEY)}") from None


def row_order(key: str) -> int:
    """Position of ``key`` in :data:`ROWS` (the order of tables and JSON)."""
    return _ORDER[row_spec(key).key]


def sweep_columns() -> tuple[tuple[str, str, str], ...]:
    """``(column, model kind, key)`` for every swept row, in ROWS order (the sweep's CSV columns)."""
    return tuple((r.column, r.applies_to[0], r.key) for r in ROWS if r.column is not None)
