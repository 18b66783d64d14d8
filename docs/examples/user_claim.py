"""A user's own claim, checked by ``attncond check`` with power and vacuity reporting.

    attncond check --load docs/examples/user_claim.py user.kappa_z_weyl --power

Claim: for a residual block, ``κ(Z) ≤ (σ_max(X) + ‖AXW_V‖) / (σ_min(X) − ‖AXW_V‖)`` (Weyl on both
ends of ``Z = AXW_V + X``); the bound is vacuous when the denominator is ``≤ 0``.
"""

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from attncond import proofs_check
from attncond.proofs_check import Assumption, BlockConfig, Conclusion, Theorem
from attncond.proofs_check.strategies import block_configs


@dataclass(frozen=True, repr=False)
class KappaZWeyl(Theorem):
    def assumptions(self, b):
        return [Assumption("Nn >= D", b.N * b.n >= b.D, {"Nn": b.N * b.n, "D": b.D})]

    def measure(self, b):  # the expensive part: build the block, take singular values
        block, X, _ = b.build()
        with torch.no_grad():
            AXV = block.attention_output(X, residual=False).reshape(-1, b.D)
            Xs = X.reshape(-1, b.D)
        sz, sx, sa = (torch.linalg.svdvals(M) for M in (AXV + Xs, Xs, AXV))
        return {"kappa": float(sz[0] / sz[-1]), "num": float(sx[0] + sa[0]), "den": float(sx[-1] - sa[0])}

    def judge(self, q, strength=1.0):  # strength > 1: the bound made that many times tighter
        if q["den"] <= 0:
            return Conclusion(True, float("inf"), q, vacuous="sigma_min(X) <= ||A X W_V||")
        bound = q["num"] / q["den"] / strength
        margin = (bound - q["kappa"]) / bound + 1e-12
        return Conclusion(margin >= 0, margin, q)


proofs_check.register(
    KappaZWeyl(id="user.kappa_z_weyl", citation="my note, eq. (3); MATH.md §4 'Z'", instance_type=BlockConfig,
               statement="kappa(Z_res) <= (s_max(X) + ||AXW_V||) / (s_min(X) - ||AXW_V||)",
               reconstructed=True, margin_scale="(bound - kappa) / bound"),
    st.one_of(block_configs(D=(2, 4)), block_configs(D=(2, 4), v_scale=(0.01, 0.3))),
    violations={"Nn >= D": block_configs(N=1, n=2, D=(3, 4), tall=False)},
    bias="half the draws with v_scale <= 0.3, where the bound is not vacuous",
)
