"""Derivations by name: :data:`DERIVATIONS` and :func:`derive`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .attention import attention_output_jacobian
from .core import DERIVATIONS, Derivation, check_name
from .gaussian import gaussian_kernel_jacobian
from .softmax import softmax_jacobian, temperature_derivative

_FUNCTIONS: dict[str, Callable[..., Derivation]] = {
    "softmax_jacobian": softmax_jacobian, "temperature_derivative": temperature_derivative,
    "gaussian_kernel_jacobian": gaussian_kernel_jacobian,
    "attention_output_jacobian": attention_output_jacobian,
}
assert tuple(_FUNCTIONS) == DERIVATIONS


def derive(name: str, **kwargs: Any) -> Derivation:
    """Dispatch to a derivation by name (one of :data:`DERIVATIONS`) with its keyword arguments."""
    check_name("derivation", name, DERIVATIONS)
    allowed = set(inspect.signature(_FUNCTIONS[name]).parameters)
    bad = sorted(set(kwargs) - allowed)
    if bad:
        raise ValueError(f"{name} does not take {bad}; it takes {sorted(allowed)}")
    return _FUNCTIONS[name](**kwargs)

