"""A 1-layer Hugging Face BERT (random weights from a config, never downloaded): J w.r.t. the
query/key/value weights. LayerNorm makes J rank-deficient (2 directions per token): diagnose
reports the null-space dimension and the smallest non-zero singular value.

    python examples/bert_layer.py
    attncond diagnose --model examples.bert_layer:factory --params '*.query.weight,*.key.weight'
"""

import torch
from transformers import BertConfig, BertModel

from attncond.models import adapt
from attncond.spectral.diagnostics import diagnose


def factory():
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=1,
                     vocab_size=32, max_position_embeddings=16)
    bert = BertModel(cfg, add_pooling_layer=False).double()
    X = torch.randn(2, 5, 16, dtype=torch.float64)  # passed as inputs_embeds
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    return bert, X, {"attention_mask": mask}


if __name__ == "__main__":
    bert, X, kw = factory()
    model = adapt(bert, X, params=["*.query.weight", "*.key.weight", "*.value.weight"], **kw)
    d = diagnose(model)
    print(d.table())
    jc = d.foreign.jacobian
    print(f"null-space dimension {jc.null_dim} (LayerNorm alone accounts for 2 per token: "
          f"{2 * X.shape[0] * X.shape[1]}), "
          f"smallest non-zero σ {jc.sigma_min_nonzero:.6g}")
