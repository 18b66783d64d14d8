"""``attncond symbolic``: table, LaTeX and JSON output, exit codes, bad input."""

from __future__ import annotations

import json

import pytest

from attncond.cli import main

SMALL = ["symbolic", "--derivation", "gaussian_kernel_jacobian", "--n", "2", "--D", "1", "--d", "1",
         "--samples", "1"]


def test_table_shows_derivation_closed_form_proof_and_comparison(capsys):
    assert main(SMALL + ["--wrt", "W_K"]) == 0
    out = capsys.readouterr().out
    assert "gaussian_kernel_jacobian(n=2, D=1, d=1, wrt=W_K): shape [2, 2, 1, 1]" in out
    assert "derivation (sympy.diff, entrywise" in out and "J[0, 1, 0, 0] = " in out
    assert "closed form: dS_kj/dW_K = (1/tau) S_kj x_j^T (x_k W_Q - x_j W_K)" in out
    assert "sympy proved derivation == closed form: yes (normal form)" in out
    lines = [ln.split() for ln in out.splitlines()]
    rows = [ln for ln in lines if ln and ln[0] in ("near_uniform", "default", "sharp")]
    # three regimes x (closed form, sympy numpy, sympy torch), each with its error against 30-digit mpmath
    assert len(rows) == 9 and all(r[-1] == "yes" for r in rows)
    assert all(float(r[4]) <= 1e-12 and float(r[-2]) <= 1e-12 for r in rows)  # vs jacrev, vs mpmath
    assert "jacrev (float64) vs 30-digit mpmath" in out


def test_latex_output(capsys):
    assert main(SMALL + ["--wrt", "W_Q", "--latex", "--regimes", "default", "--max-entries", "2"]) == 0
    out = capsys.readouterr().out
    assert "% derived entrywise (none)" in out and "% closed form: dS_kj/dW_Q" in out
    assert r"\frac{" in out and r"e^{" in out and "% ... 2 more entries" in out


def test_json_output_and_float32(capsys):
    argv = ["symbolic", "--derivation", "softmax_jacobian", "--n", "3", "--dtype", "float32", "--json",
            "--regimes", "default,sharp", "--exact-digits", "0"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["derivation"]["name"] == "softmax_jacobian" and out["derivation"]["proved"] is True
    assert [c["regime"] for c in out["comparisons"]] == ["default", "sharp"]
    for c in out["comparisons"]:
        assert c["dtype"] == "float32" and c["reference_dtype"] == "float64" and c["exact_digits"] is None
        assert c["passed"] and c["max_rel_error"] <= 1e-5
        assert c["jacrev_dtype_error"] is not None and c["rows"][0]["max_rel_error_exact"] is None


def test_failed_comparison_exits_1(capsys):
    # NormSoftmax near uniform: logits z/var(z) ~ 1e8; the raw sympy formulas overflow (honest failure)
    argv = ["symbolic", "--kernel", "normsoftmax", "--wrt", "W_K", "--n", "2", "--D", "1", "--d", "1",
            "--regimes", "near_uniform", "--samples", "1", "--exact-digits", "0"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    rows = {ln.split()[2]: ln.split()[-1] for ln in out.splitlines() if ln.startswith("near_uniform")}
    assert rows == {"closed_form_torch": "yes", "sympy_numpy": "no", "sympy_torch": "no"}  # raw exp overflows
    assert "sympy proved derivation == closed form: yes (normal form on both branches of Min(tau, v))" in out


@pytest.mark.parametrize("argv,msg", [
    (["symbolic", "--n", "5"], "n=5 is too large for symbolic work (limit n <= 4"),
    (["symbolic", "--D", "4"], "use the closed forms in models.derivatives"),
    (["symbolic", "--derivation", "gaussian_kernel_jacobian", "--wrt", "W_V"],
     "gaussian_kernel_jacobian differentiates w.r.t. W_Q or W_K, got --wrt W_V"),
    (["symbolic", "--regimes", "flat", "--derivation", "softmax_jacobian", "--n", "2"],
     "unknown regime 'flat'"),
    (["symbolic", "--regimes", ","], "--regimes must name at least one regime"),
    (["symbolic", "--samples", "0"], "--samples must be a positive integer"),
    (["symbolic", "--max-entries", "0"], "--max-entries must be a positive integer"),
    (["symbolic", "--exact-digits", "7", "--derivation", "softmax_jacobian", "--n", "2"],
     "exact_digits must be an integer in [20, 200]"),
])
def test_bad_input_exits_2_with_message(argv, msg, capsys):
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["symbolic", "--kernel", "softmaks"], ["symbolic", "--wrt", "W_X"]])
def test_unknown_kernel_or_wrt_is_an_argparse_error(argv, capsys):
    assert main(argv) == 2  # argparse's usage error, returned (not raised) by main
    err = capsys.readouterr().err
    assert "invalid choice" in err and len(err.splitlines()) == 1
