"""attncond.models: what is analysed — attention kernels, models, initialisations, data.

Imports torch only; nothing here imports ``spectral`` or ``proofs_check``.
"""

if __name__ == "models":  # imported by its short name from a checkout: alias attncond.models
    from attncond.aliasing import alias_package

    alias_package(__name__)

from .attention import MultiHeadAttention
from .block import ACTIVATIONS, AttentionBlock, Stack
from .data import (
    Dataset,
    Pathfinder,
    TwoStepDigits,
    digits_two_step,
    patchify,
    pathfinder,
    synthetic_regression,
    teacher_student,
)
from .init import REGIMES, regime_scale
from .kernels import (
    KERNELS,
    Kernel,
    KernelUnderflowWarning,
    gaussian,
    gaussian_log_kernel,
    get_kernel,
    heat_treatment,
    linear,
    logits,
    normsoftmax,
    normsoftmax_std,
    softmax,
    temperature,
)
from .prompt import PromptTokenModel

__all__ = [
    "ACTIVATIONS", "AttentionBlock", "Dataset", "KERNELS", "Kernel", "KernelUnderflowWarning",
    "MultiHeadAttention", "Pathfinder", "PromptTokenModel", "REGIMES", "Stack", "TwoStepDigits",
    "digits_two_step", "gaussian", "gaussian_log_kernel", "get_kernel", "heat_treatment",
    "linear", "logits", "normsoftmax", "normsoftmax_std", "patchify", "pathfinder", "regime_scale",
    "softmax", "synthetic_regression", "teacher_student", "temperature",
]
