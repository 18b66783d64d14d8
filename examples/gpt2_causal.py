"""A 2-layer GPT-2 (random weights): causal masks are detected, the softmax-Jacobian κ is taken on
each row's support (no κ = inf from masked zeros), per layer and per head.

    python examples/gpt2_causal.py
    attncond diagnose --model examples.gpt2_causal:factory --params 'h.*.attn.c_attn.weight'
"""

import torch
from transformers import GPT2Config, GPT2Model

from attncond.models import adapt
from attncond.spectral.diagnostics import diagnose


def factory():
    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=16, n_head=2, n_layer=2, vocab_size=32, n_positions=16, bos_token_id=0,
                     eos_token_id=0)
    return GPT2Model(cfg).double(), torch.randn(2, 6, 16, dtype=torch.float64)


if __name__ == "__main__":
    gpt2, X = factory()
    model = adapt(gpt2, X, params="h.*.attn.c_attn.weight")
    d = diagnose(model)
    print(d.table())
    for layer in d.foreign.attention:
        print(layer)
