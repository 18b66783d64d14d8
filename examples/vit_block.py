"""A 1-block Hugging Face ViT (random weights; timm needs torchvision, which cannot load beside the
CPU torch here, so ViTs are covered through transformers): J w.r.t. the Q/K projections.

    python examples/vit_block.py
    attncond diagnose --hf-config examples/vit_config.json --params '*attention.q_proj.weight'
"""

import torch
from transformers import ViTConfig, ViTModel

from attncond.models import adapt
from attncond.spectral.diagnostics import diagnose


def factory():
    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=1,
                    image_size=8, patch_size=4, num_channels=1)
    return ViTModel(cfg, add_pooling_layer=False).double(), torch.randn(2, 1, 8, 8, dtype=torch.float64)


if __name__ == "__main__":
    vit, X = factory()
    model = adapt(vit, X, params="*attention.[qk]_proj.weight")
    print(diagnose(model).table())
