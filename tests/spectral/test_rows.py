"""The ROWS table drives diagnose, the CLI table and the sweep columns."""

from __future__ import annotations

import pytest

import attncond.sweep as sweep
from attncond.cmd_diagnose import TABLE_KEYS
from attncond.models import AttentionBlock, MultiHeadAttention, synthetic_regression
from attncond.spectral.diagnostics import ROWS, diagnose
from attncond.spectral.diagnostics.rows import row_order, row_spec


@pytest.fixture(scope="module")
def reports():
    data = synthetic_regression(N=3, n=4, D=6, seed=0)
    mh = diagnose(MultiHeadAttention(6, 3, 2, seed=1), data.X, data.y)
    bl = diagnose(AttentionBlock(6, 3, seed=1), data.X)
    return {"mh": mh, "block": bl}


def test_every_emitted_row_is_in_rows_and_in_rows_order(reports):
    for kind, rep in reports.items():
        keys = [r.key for r in rep.rows]
        assert keys, kind
        assert keys == sorted(keys, key=row_order)
        for r in rep.rows:
            spec = row_spec(r.key)
            assert kind in spec.applies_to or not r.defined, (kind, r.key)


def test_unknown_key_is_an_error():
    with pytest.raises(KeyError, match="no diagnostic row 'nope'"):
        row_spec("nope")


def test_sweep_columns_and_cli_table_come_from_rows():
    assert sweep.METRICS == tuple(r.column for r in ROWS if r.column)
    assert all(c in sweep.COLUMNS for c in sweep.METRICS)
    assert set(TABLE_KEYS["mh"]) == {r.key for r in ROWS if r.table and "mh" in r.applies_to}
    assert "z.res.kappa" in TABLE_KEYS["block"] and "z.res.kappa" not in TABLE_KEYS["mh"]


def test_diagnose_forms_b0_once_and_beta_is_certified(monkeypatch):
    import attncond.spectral.diagnostics.b0 as b0_mod
    import attncond.spectral.diagnostics.structured as structured

    calls = []
    real = structured.B0

    def counting(model, X):
        calls.append(1)
        return real(model, X)

    monkeypatch.setattr(b0_mod, "B0", counting)
    monkeypatch.setattr(structured, "B0", counting)
    data = synthetic_regression(N=2, n=3, D=6, seed=0)
    dg = diagnose(MultiHeadAttention(6, 3, 2, seed=1), data.X)
    assert len(calls) == 1
    beta = dg.row("beta_paper")
    lo, hi = beta.interval
    assert dg.beta.certified and lo <= beta.value <= hi
    # β uses the certified σ_min(B0) (HD = 12 ≥ Nn = 6), not a separate svdvals
    assert dg.beta.sigma_min_B0T == dg.b0.sigma_min
