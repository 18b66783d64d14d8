"""attncond.models: what is analysed — attention kernels, models, initialisations, data.

Imports torch only; nothing here imports ``spectral`` or ``proofs_check``.
"""

if __name__ == "models":  # imported by its short name from a checkout: alias attncond.models
    from attncond.aliasing import alias_package

    alias_package(__name__)

from .adapters import (
    AdaptedModel,
    AttentionMap,
    ForwardADUnsupported,
    adapt,
    mha_extra_keys,
    parameter_aliases,
    select_params,
)
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
    CAPABILITIES,
    KERNELS,
    Kernel,
    KernelCapabilityError,
    KernelForm,
    KernelUnderflowWarning,
    KernelVariant,
    gaussian,
    gaussian_log_kernel,
    get_kernel,
    heat_treatment,
    kernel_variant,
    key_reference,
    linear,
    logits,
    normsoftmax,
    normsoftmax_std,
    register_kernel,
    softmax,
    temperature,
    unregister_kernel,
)
from .prompt import PromptTokenModel
from .rank import PRODUCT_LOGITS, JacobianRankBound, RankPiece, jacobian_rank_bound
from .stable import softmax_centred, stable_gaussian_kernel, stable_softmax

__all__ = [
    "ACTIVATIONS", "adapt", "AdaptedModel", "AttentionBlock", "AttentionMap", "CAPABILITIES", "Dataset",
    "digits_two_step", "ForwardADUnsupported", "gaussian", "gaussian_log_kernel", "get_kernel",
    "heat_treatment", "jacobian_rank_bound", "JacobianRankBound", "Kernel", "kernel_variant", "key_reference",
    "KernelCapabilityError", "KernelForm", "KERNELS", "KernelUnderflowWarning", "KernelVariant", "linear",
    "logits", "mha_extra_keys", "MultiHeadAttention", "normsoftmax", "normsoftmax_std", "patchify",
    "pathfinder", "Pathfinder", "parameter_aliases", "PRODUCT_LOGITS", "PromptTokenModel", "RankPiece",
    "regime_scale", "REGIMES", "register_kernel", "select_params", "softmax", "softmax_centred",
    "stable_gaussian_kernel", "stable_softmax", "Stack", "synthetic_regression", "teacher_student",
    "temperature", "TwoStepDigits", "unregister_kernel",
]
