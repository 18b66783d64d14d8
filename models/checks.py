"""Argument validation shared by every public constructor and function in ``models``.

Each check raises before any computation, with a message that names the argument
and says what was wrong (``ValueError`` for bad values, ``TypeError`` for bad types).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

FLOAT_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def is_transformed(t: torch.Tensor) -> bool:
    """True when ``t`` is wrapped by a ``torch.func`` transform (vmap, grad, jvp).

    Value-dependent checks (NaN scans, underflow counts) call ``bool()`` on a tensor,
    which ``vmap`` forbids; they are skipped for wrapped tensors and run on plain ones.
    """
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))
    except AttributeError:  # pragma: no cover - very old torch
        return False


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` as ``int`` if it is a positive integer, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def check_nonneg_int(name: str, value: Any) -> int:
    """Return ``value`` as ``int`` if it is an integer >= 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value}")
    return int(value)


def check_positive_float(name: str, value: Any) -> float:
    """Return ``value`` as ``float`` if it is finite and > 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def check_flag(name: str, value: Any, *, allow_none: bool = False) -> bool | None:
    """``value`` as a ``bool`` if it is one (numpy's included; ``None`` too with ``allow_none``), else a
    ``TypeError`` naming ``name``: a string such as ``'no'`` or an integer is not taken as a flag."""
    if value is None and allow_none:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False{' or None' if allow_none else ''}, got {value!r}")
    return bool(value)


def check_tau(tau: Any, name: str = "tau") -> float:
    """A temperature: finite and strictly positive."""
    return check_positive_float(name, tau)


def check_dtype(dtype: Any, name: str = "dtype") -> torch.dtype:
    """Accept ``torch.float32``/``torch.float64`` or their names; refuse everything else."""
    if isinstance(dtype, str):
        if dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name} must be one of {sorted(FLOAT_DTYPES)}, got {dtype!r}")
        return FLOAT_DTYPES[dtype]
    if dtype in (torch.float32, torch.float64):
        return dtype
    if dtype in (np.float32, np.float64):
        return FLOAT_DTYPES[np.dtype(dtype).name]
    raise TypeError(f"{name} must be torch.float32 or torch.float64, got {dtype!r}")


def check_device(device: Any, name: str = "device") -> torch.device:
    """Normalise a device argument; ``None`` means CPU."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{name} is not a valid torch device: {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise ValueError(f"{name}={device!r} requested but {why}; use device='cpu'")
    return dev


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` must be one of ``choices``; the error lists them."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; known: {', '.join(map(repr, choices))}")
    return value


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise if ``t`` holds NaN or inf (skipped inside torch.func transforms)."""
    if is_transformed(t):
        return
    if t.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (shape only, no data): materialise it first")
    if not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} inf)")


def as_float_tensor(
    name: str,
    x: Any,
    *,
    dtype: torch.dtype,
    device: torch.device,
    ndim: int | None = None,
) -> torch.Tensor:
    """Convert numpy/torch input to a finite tensor of ``dtype`` on ``device``.

    A numpy array is converted. A torch tensor of another floating dtype is refused
    (TypeError) rather than silently cast, because mixing float32 data into a float64
    analysis is a classic source of lost digits. Integer data is promoted; complex and
    boolean data (numpy or torch) are refused (TypeError), never silently made real.
    """
    if isinstance(x, np.ndarray) or isinstance(x, (list, tuple)):
        arr = np.asarray(x)
        if np.iscomplexobj(arr):
            raise TypeError(f"{name} must be real, got a complex array of dtype {arr.dtype}")
        if not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"{name} must be numeric, got array of dtype {arr.dtype}")
        t = torch.as_tensor(arr, dtype=dtype, device=device)
    elif isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{name} must be real, got {x.dtype}")
        if x.dtype == torch.bool:
            raise TypeError(f"{name} must be numeric, got a torch.bool tensor")
        if x.is_floating_point() and x.dtype != dtype:
            raise TypeError(
                f"{name} has dtype {x.dtype} but {dtype} is expected; cast it with .to({dtype})"
            )
        t = x if x.is_floating_point() else x.to(dtype)
        if t.device != device and not (device.type == t.device.type and device.index is None):
            raise ValueError(f"{name} is on device {t.device} but {device} is expected")
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    check_finite(name, t)
    return t


def as_model_input(name: str, x: Any, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """One input of a user's module: floating data, or integer token ids.

    Floating data (numpy or torch) goes through :func:`as_float_tensor` (finite, of the
    model's ``dtype``; another floating dtype is refused). Integer data, numpy or torch, is
    kept as integers: a ``torch.long`` tensor of token ids (e.g. Hugging Face ``input_ids``),
    the same for both. Complex and boolean data are refused.

    Parameters
    ----------
    name : the argument's name in error messages (``"inputs[0]"``).
    x : numpy array, nested list or torch tensor.
    dtype, device : the model's floating dtype and device.

    Returns
    -------
    torch.Tensor
        ``dtype`` for floating data, ``torch.long`` for integer data.

    Raises
    ------
    TypeError
        complex, boolean or non-numeric data; a floating tensor of another dtype; not an array.
    ValueError
        NaN/inf entries; a tensor on another device.

    Examples
    --------
    >>> as_model_input("ids", np.array([[1, 2]]), dtype=torch.float64, device=torch.device("cpu")).dtype
    torch.int64
    """
    if isinstance(x, torch.Tensor):
        kind = "complex" if x.is_complex() else "bool" if x.dtype == torch.bool else \
            "int" if not x.is_floating_point() else "float"
        shown = str(x.dtype)
    elif isinstance(x, (np.ndarray, list, tuple)):
        arr = np.asarray(x)
        kind = "complex" if np.iscomplexobj(arr) else "bool" if arr.dtype == np.bool_ else \
            "int" if np.issubdtype(arr.dtype, np.integer) else \
            "float" if np.issubdtype(arr.dtype, np.floating) else "other"
        shown = str(arr.dtype)
        x = arr
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if kind == "complex":
        raise TypeError(f"{name} must be real, got complex data ({shown})")
    if kind == "bool":
        raise TypeError(f"{name} is boolean ({shown}): pass float data of dtype {dtype}, or integer "
                        "token ids; a padding mask goes in attention_mask=")
    if kind == "other":
        raise TypeError(f"{name} must be numeric, got array of dtype {shown}")
    if kind == "float":
        return as_float_tensor(name, x, dtype=dtype, device=device)
    t = torch.as_tensor(x).to(device=device, dtype=torch.long)
    return t


def check_X(
    X: Any, D: int, *, dtype: torch.dtype, device: torch.device, name: str = "X"
) -> torch.Tensor:
    """Inputs of shape (N, n, D) matching the model's embedding dimension ``D``."""
    t = as_float_tensor(name, X, dtype=dtype, device=device)
    if t.ndim != 3:
        raise ValueError(f"{name} must have shape (N, n, D), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must have N >= 1 samples and n >= 1 tokens, got {tuple(t.shape)}")
    if t.shape[2] != D:
        raise ValueError(f"{name} has D={t.shape[2]} features per token but the model has D={D}")
    return t


def check_subset(name: str, value: Any, allowed: Sequence[str]) -> tuple[str, ...]:
    """A non-empty tuple of distinct names drawn from ``allowed``."""
    if isinstance(value, str):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of names from {list(allowed)}") from None
    if not items:
        raise ValueError(f"{name} must name at least one of {list(allowed)}")
    for it in items:
        if it not in allowed:
            raise ValueError(f"{name} contains unknown name {it!r}; known: {list(allowed)}")
    if len(set(items)) != len(items):
        raise ValueError(f"{name} contains duplicates: {items}")
    return items
