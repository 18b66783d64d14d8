"""Your own nn.MultiheadAttention: κ(J) w.r.t. the packed Q/K/V in-projection, μ, softmax-Jacobian
spectra on each row's support (padding + causal masks), Hessian extremes.

    python examples/mha.py
    attncond diagnose --model examples.mha:factory --params in_proj_weight
"""

import torch
from torch import nn

from attncond.models import adapt
from attncond.spectral.diagnostics import diagnose


def factory():
    """(module, example_inputs, adapt keyword arguments) for ``attncond diagnose --model``."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(embed_dim=4, num_heads=2, batch_first=True, dtype=torch.float64)
    X = torch.randn(3, 5, 4, dtype=torch.float64)  # (batch, tokens, embed_dim)
    mask = torch.ones(3, 5)
    mask[1, 3:] = 0  # sample 1 has two padding tokens (1 = attend, 0 = padding)
    return mha, X, {"attention_mask": mask, "causal": True}


if __name__ == "__main__":
    mha, X, kw = factory()
    model = adapt(mha, X, params="in_proj_weight", **kw)
    y = torch.randn(3, 5, 4, dtype=torch.float64)  # targets: adds the Hessian rows of ½‖f − y‖²
    print(diagnose(model, y=y).table())
