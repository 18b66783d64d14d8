"""Gradient descent: backward compatibility, auto step size, mu_t, rate check, region."""

from __future__ import annotations

import math

import pytest
import torch

from proofs_check.dynamics import GDTrace, gradient_descent, pl_constant_generic, smoothness_estimate


def quadratic(seed=0, m=4, p=6):
    """f(θ) = ½‖Aθ − b‖², outputs Aθ: J = A, μ = λ_min(AAᵀ), L = λ_max(AᵀA)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, p, generator=g, dtype=torch.float64)
    b = torch.randn(m, generator=g, dtype=torch.float64)
    theta0 = {"w": torch.zeros(p, dtype=torch.float64)}
    return A, b, theta0, (lambda q: 0.5 * ((A @ q["w"] - b) ** 2).sum()), (lambda q: A @ q["w"])


def test_backward_compatible_fixed_lr_matches_manual_gd():
    A, b, th, loss, _ = quadratic()
    p, tr = gradient_descent(loss, th, steps=5, lr=0.05)
    w = torch.zeros(6, dtype=torch.float64)
    for _ in range(5):
        w = w - 0.05 * A.T @ (A @ w - b)
    torch.testing.assert_close(p["w"], w, rtol=1e-14, atol=1e-14)
    assert isinstance(tr, GDTrace) and len(tr.losses) == 6 and tr.lr_source == "given" and not tr.diverged
    assert tr.contraction[0] == pytest.approx(tr.losses[1] / tr.losses[0], rel=1e-15)
    seen = []
    gradient_descent(loss, th, steps=2, lr=0.05, callback=lambda t, q, f: seen.append(t))
    assert seen == [0, 1, 2]


def test_auto_lr_is_one_over_lambda_max():
    A, b, th, loss, _ = quadratic()
    L_ref = float(torch.linalg.eigvalsh(A.T @ A)[-1])
    est = smoothness_estimate(loss, th)
    assert est.L == pytest.approx(L_ref, rel=1e-10)
    _, tr = gradient_descent(loss, th, steps=3, lr="auto")
    assert tr.lr == pytest.approx(1.0 / L_ref, rel=1e-10) and tr.lr_source == "auto"
    _, tr = gradient_descent(loss, th, steps=3, lr="auto", safety=0.5)
    assert tr.lr == pytest.approx(0.5 / L_ref, rel=1e-10)


def test_mu_matches_dense_and_rate_holds_on_quadratic():
    A, b, th, loss, out = quadratic()
    lam = torch.linalg.eigvalsh(A @ A.T)
    mu, Lam = pl_constant_generic(out, th, with_max=True)
    assert mu == pytest.approx(float(lam[0]), rel=1e-10) and Lam == pytest.approx(float(lam[-1]), rel=1e-10)
    _, tr = gradient_descent(loss, th, steps=30, lr="auto", output_fn=out, mu_every=1)
    assert tr.mu_steps == list(range(31)) and all(m == pytest.approx(float(lam[0]), rel=1e-9) for m in tr.mu)
    rc = tr.rate_check()
    assert rc.holds and rc.step_violations == 0 and rc.steps_checked == 30
    assert rc.observed_mean_contraction <= rc.predicted_contraction
    # radius R = 2 sqrt(2 Λ0 f0) / μ0, and the quadratic's iterates stay inside it
    R = 2 * math.sqrt(2 * float(lam[-1]) * tr.losses[0]) / float(lam[0])
    assert tr.radius == pytest.approx(R, rel=1e-9)
    assert tr.in_region is True and max(tr.distances) <= tr.radius
    assert tr.to_dict()["beta_prime"] == pytest.approx(float(lam[0]), rel=1e-9)


def test_tall_jacobian_has_zero_mu():
    _, _, th, _, out = quadratic(m=8, p=3)
    assert pl_constant_generic(out, th) == 0.0


def test_step_above_two_over_L_violates_the_rate():
    A, b, th, loss, out = quadratic()
    _, tr = gradient_descent(loss, th, steps=20, lr="auto", safety=2.5, output_fn=out, mu_every=5)
    rc = tr.rate_check()
    assert not rc.holds and rc.margin < 0 and tr.losses[-1] > tr.losses[0]
    assert tr.mu_steps == [0, 5, 10, 15, 20]


def test_divergence_is_flagged():
    th = {"w": torch.ones(2, dtype=torch.float64)}
    _, tr = gradient_descent(lambda q: (q["w"] ** 4).sum() * 1e300, th, steps=5, lr=1.0)
    assert tr.diverged and "loss became" in tr.reason


@pytest.mark.parametrize("kw,err,msg", [
    ({"steps": -1, "lr": 0.1}, ValueError, "steps must be a non-negative integer"),
    ({"steps": 1, "lr": 0.0}, ValueError, "lr must be a finite number > 0"),
    ({"steps": 1, "lr": "fast"}, ValueError, "or 'auto'"),
    ({"steps": 1, "lr": 0.1, "mu_every": 2}, ValueError, "mu_every > 0 needs output_fn"),
    ({"steps": 1, "lr": 0.1, "safety": 0}, ValueError, "safety must be a finite number > 0"),
])
def test_gradient_descent_validates(kw, err, msg):
    _, _, th, loss, _ = quadratic()
    with pytest.raises(err, match=msg):
        gradient_descent(loss, th, **kw)


def test_rate_check_needs_mu():
    _, _, th, loss, _ = quadratic()
    _, tr = gradient_descent(loss, th, steps=2, lr=0.01)
    with pytest.raises(ValueError, match="rate_check needs mu recorded"):
        tr.rate_check()
    assert tr.rate_check(beta=0.0).holds  # beta = 0: the bound is f_0, GD with a small step stays below


def test_grad_sq_norms_and_descent_certificate_on_a_quadratic():
    """‖∇f_t‖² is recorded exactly; on a quadratic with η ≤ 1/L the descent lemma holds at every step, and
    η = 2.5/L (curvature above 1/η) breaks it at every step."""
    A, b, th, loss, _ = quadratic()
    _, tr = gradient_descent(loss, th, steps=10, lr="auto")
    w = torch.zeros(6, dtype=torch.float64)
    for t in range(11):
        g = A.T @ (A @ w - b)
        assert tr.grad_sq_norms[t] == pytest.approx(float(g @ g), rel=1e-13)
        w = w - tr.lr * g
    assert tr.descent_violations() == []
    _, bad = gradient_descent(loss, th, steps=10, lr="auto", safety=2.5)
    assert bad.descent_violations() == list(range(10))


def test_descent_certificate_counts_a_non_finite_loss_and_needs_gradients():
    tr = GDTrace(losses=[1.0, math.inf], lr=0.1, steps=1, grad_sq_norms=[1.0])
    assert tr.descent_violations() == [0]
    with pytest.raises(ValueError, match="needs grad_sq_norms"):
        GDTrace(losses=[1.0, 0.5], lr=0.1, steps=1).descent_violations()
