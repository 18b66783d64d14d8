"""[H24] NormSoftmax gradient claim (MATH.md §2 "normsoftmax", §5.7).

``H24.normsoftmax_gradient``: for near-uniform attention — every row statistic of the
unscaled logits ``z = X W^Q (X W^K)ᵀ`` below ``τ`` (so NormSoftmax divides by the statistic,
not by ``τ``) — NormSoftmax yields strictly larger ``‖∇_{W^Q} f‖`` and ``‖∇_{W^K} f‖`` than
standard softmax at the same weights and data.

The row statistic is a **reconstructed**, switchable choice (MATH.md §2): the registered claim
uses the kernel ``"normsoftmax"`` (row *variance*, the toolkit's default); the variant
``H24.normsoftmax_std_gradient`` uses the row standard deviation. With the variance,
``z/var(z)`` grows like ``1/scale`` as the logits shrink, so deep in the near-uniform regime
attention saturates to one-hot and its gradient vanishes: the claim fails there, while the
std form (scale-invariant logits ``z/std(z)``) keeps it — for ``n ≥ 3`` keys. With ``n = 2`` the
std-normalised logit difference is ``(z_1 − z_2)/std(z) = ±√2``, constant in the weights, so the
attention has zero gradient. With ``d = 1`` the query of token ``j`` is a scalar ``q_j`` and row
``j`` of ``z`` is ``q_j·k``, so ``z_j/std(z_j) = sign(q_j)·k/std(k)`` does not depend on ``W^Q``:
``∇_{W^Q} = 0``; with ``D = 1`` the same happens to both ``W^Q`` and ``W^K``. The std variant
therefore assumes ``n ≥ 3``, ``D ≥ 2`` and ``d ≥ 2`` (found by ``attncond check``). Even so it
fails on a few draws (3 to 7 of 200 with seed 0, margin down to −1.8 decades), also when the spread is
far below ``τ`` (``spread_fraction`` tightens the assumption to ``max stat < fraction·τ``); we
know of no simple variant that holds on every draw.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from attncond.models import KernelUnderflowWarning

from ..strategies import attention_configs, near_uniform_attention
from .base import Assumption, AttentionConfig, Conclusion, Theorem, relu_margin
from .registry import register

__all__ = ["NormSoftmaxGradientTheorem", "row_statistics", "THEOREMS"]

STRICT = 1e-10  # "strictly larger": ratio above 1 + 1e-10 (beyond rounding)


def row_statistics(cfg: AttentionConfig, stat: str) -> tuple[torch.Tensor, float]:
    """Row statistic (``"var"`` or ``"std"``, unbiased) of ``z = X W^Q (X W^K)ᵀ`` for every head, sample
    and query, and ``τ = √d``."""
    model, X, _ = cfg.replace(kernel="softmax").build()
    with torch.no_grad():
        Q = torch.einsum("isD,hDd->ihsd", X, model.W_Q)
        K = torch.einsum("isD,hDd->ihsd", X, model.W_K)
        z = Q @ K.transpose(-1, -2)
        s = z.var(-1, unbiased=True) if stat == "var" else z.std(-1, unbiased=True)
    return s, math.sqrt(cfg.d)


def _grad_norms(cfg: AttentionConfig, kernel: str) -> dict[str, float]:
    model, X, y = cfg.replace(kernel=kernel, trainable=("W_Q", "W_K", "W_V")).build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelUnderflowWarning)
        g = torch.func.grad(lambda p: model.loss(p, X, y))(model.params())
    return {"W_Q": float(g["W_Q"].norm()), "W_K": float(g["W_K"].norm())}


@dataclass(frozen=True, repr=False)
class NormSoftmaxGradientTheorem(Theorem):
    """``H24.normsoftmax_gradient`` (and the ``_std`` variant): larger ``W^Q``/``W^K`` gradients near "
      "uniform."""

    kernel: str = "normsoftmax"
    min_keys: int = 2
    min_width: int = 1
    spread_fraction: float = 1.0

    @property
    def stat(self) -> str:
        return "std" if self.kernel == "normsoftmax_std" else "var"

    def assumptions(self, inst: AttentionConfig) -> list[Assumption]:
        s, tau = row_statistics(inst, self.stat)
        smax = float(s.max())
        c = self.spread_fraction
        return [
            Assumption(f"logit spread below tau: max row {self.stat}(z) < {c:g} tau", smax < c * tau,
                       {"max_stat": smax, "tau": tau}),
            Assumption(f"n >= {self.min_keys} keys per row", inst.n >= self.min_keys, inst.n),
            Assumption(f"D >= {self.min_width} and d >= {self.min_width}",
                       min(inst.D, inst.d) >= self.min_width, {"D": inst.D, "d": inst.d}),
        ]

    def measure(self, inst: AttentionConfig) -> dict:
        return {"softmax": _grad_norms(inst, "softmax"), self.kernel: _grad_norms(inst, self.kernel)}

    def judge(self, q: dict, strength: float = 1.0) -> Conclusion:
        gs, gn = q["softmax"], q[self.kernel]

        def dec(a: float, b: float) -> float:
            if b == 0:
                return math.inf if a > 0 else 0.0
            return -math.inf if a == 0 else math.log10(a / b)

        mq, mk = dec(gn["W_Q"], gs["W_Q"]), dec(gn["W_K"], gs["W_K"])
        margin = relu_margin(min(mq, mk) - math.log10(strength * (1 + STRICT)))
        return Conclusion(margin > 0, margin, {
            "grad_W_Q": {"softmax": gs["W_Q"], self.kernel: gn["W_Q"]},
            "grad_W_K": {"softmax": gs["W_K"], self.kernel: gn["W_K"]},
            "decades_W_Q": mq, "decades_W_K": mk,
        })

    def kernel_variants(self) -> tuple[tuple[str, str, Theorem], ...]:
        wrong = dataclasses.replace(self, id=self.id + "~kernel=softmax", kernel="softmax")
        return (("kernel=softmax", "softmax in place of NormSoftmax: identical gradients, so the strict "
                 "inequality must fail", wrong),)

    def violating_instance(self) -> AttentionConfig:
        # sharp attention: every row statistic exceeds tau, so NormSoftmax = softmax(z/tau): equal gradients
        return AttentionConfig(N=2, n=3, D=4, d=2, H=2, init_scale=30.0, seed=0)


_PAPER = ("[H24] NormSoftmax (MATH.md §5.7): for near-uniform attention (logit spread below tau), NormSoftmax "
          "yields larger ||grad_{W^Q}||, ||grad_{W^K}|| than standard softmax.")

THEOREMS: tuple[Theorem, ...] = (
    NormSoftmaxGradientTheorem(
        id="H24.normsoftmax_gradient",
        citation="[H24] Sec. 4 NormSoftmax (official code), row variance; MATH.md §2, §5.7",
        statement="If every row variance of z = X W^Q (X W^K)^T is below tau = sqrt(d), NormSoftmax gives "
                  "strictly "
                  "larger ||grad_{W^Q} f|| and ||grad_{W^K} f|| than softmax(z/tau).",
        reconstructed=True, exact=False, instance_type=AttentionConfig, kernel="normsoftmax",
        paper_statement=_PAPER,
        variant_that_holds="H24.normsoftmax_std_gradient (row std instead of variance, n >= 3, D >= 2, d >= "
                           "2), "
                           "which held on ~97% of 200 draws (seed 0); no variant held on every draw",
        margin_scale="min over W^Q, W^K of log10(||grad_normsoftmax|| / ||grad_softmax||) - log10(1 + 1e-10): "
                     "decades",
    ),
    NormSoftmaxGradientTheorem(
        id="H24.normsoftmax_std_gradient",
        citation="[H24] Sec. 4 NormSoftmax, row standard deviation variant; MATH.md §2, §5.7",
        statement="If n >= 3, D >= 2, d >= 2 and every row standard deviation of z = X W^Q (X W^K)^T is below "
                  "tau = sqrt(d), "
                  "NormSoftmax(std) gives strictly larger ||grad_{W^Q} f|| and ||grad_{W^K} f|| than "
                  "softmax(z/tau).",
        paper_statement=_PAPER,
        reconstructed=True, exact=False, instance_type=AttentionConfig, kernel="normsoftmax_std", min_keys=3,
        min_width=2,
        margin_scale="min over W^Q, W^K of log10(||grad_normsoftmax_std|| / ||grad_softmax||) - log10(1 + "
                     "1e-10): "
                     "decades",
    ),
)


def _h24(**kw):
    base = dict(N=(1, 3), n=(2, 4), D=(1, 5), d=(1, 3), H=(1, 2))
    base.update(kw)
    return base


register(THEOREMS[0], lambda: near_uniform_attention(**_h24(init_scale=(1e-3, 0.5))),
         violations={"logit spread below tau: max row var(z) < 1 tau": lambda: attention_configs(
             **_h24(init_scale=(5.0, 30.0)))},
         bias="init_scale in [1e-3, 0.5]: near-uniform attention, where the spread assumption holds")
register(THEOREMS[1],
         lambda: near_uniform_attention(**_h24(n=(3, 4), D=(2, 5), d=(2, 3), init_scale=(1e-3, 0.5))),
         violations={"logit spread below tau: max row std(z) < 1 tau": lambda: attention_configs(
             **_h24(n=(3, 4), D=(2, 5), d=(2, 3), init_scale=(5.0, 30.0))),
             "n >= 3 keys per row": lambda: near_uniform_attention(**_h24(n=2, D=(2, 5), d=(2, 3),
                                                                           init_scale=(1e-3, 0.5))),
             "D >= 2 and d >= 2": lambda: st.one_of(
                 near_uniform_attention(**_h24(n=(3, 4), D=(2, 5), d=1, init_scale=(1e-3, 0.5))),
                 near_uniform_attention(**_h24(n=(3, 4), D=1, d=(2, 3), init_scale=(1e-3, 0.5))))},
         bias="n >= 3, D, d >= 2 by construction; init_scale in [1e-3, 0.5] (near-uniform)")
