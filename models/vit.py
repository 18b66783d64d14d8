"""A tiny Vision Transformer for the [H24] two-step digits task (MATH.md §2, §6).

Tokens are image patches (:func:`models.data.patchify`), embedded by a linear map,
plus a learned positional embedding and (``pooling="cls"``) a learned CLS token. Each
of the ``L`` layers is

* pre-norm:  ``x ← x + MHA(LN(x))``, ``x ← x + MLP(LN(x))``;
* post-norm: ``x ← LN(x + MHA(x))``, ``x ← LN(x + MLP(x))``;

with ``MHA(x) = [S_1 x W^V_1, …, S_H x W^V_H] W^O`` and
``S_h = kernel(x W^Q_h, x W^K_h, τ)`` for any kernel of :data:`models.kernels.KERNELS`.
The MLP is ``GELU(x W_1 + b_1) W_2 + b_2``. The pooled vector (CLS token or the mean
over tokens, after a final LayerNorm) feeds the label head; an optional **probe** head
reads the *detached* pooled vector and predicts the intermediate "match" bit, so it
measures what the representation encodes without changing what the backbone learns.

Heat treatment ([H24]): with ``kernel="temperature"`` the logits ``x W^Q (x W^K)ᵀ`` are
multiplied by a logit multiplier ``m = 1/τ`` that the training loop sets each step with
:meth:`TinyViT.set_logit_multiplier` (for example ``heat_treatment(step / steps)``).

Parameter names (for per-layer gradient statistics): ``layers.<l>.W_Q``, ``W_K``,
``W_V`` of shape ``(H, D, d)``, ``layers.<l>.W_O`` of shape ``(H·d, D)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checks import (
    check_choice,
    check_device,
    check_dtype,
    check_positive_float,
    check_positive_int,
    check_X,
)
from .init import gaussian_weight, make_generator
from .kernels import check_kernel_options, get_kernel

NORMS: tuple[str, ...] = ("pre", "post")
POOLINGS: tuple[str, ...] = ("cls", "mean")


class _Layer(nn.Module):
    """One transformer layer (attention + MLP) with pre- or post-LayerNorm."""

    def __init__(self, D: int, d: int, H: int, d_mlp: int, kw: dict[str, Any]) -> None:
        super().__init__()
        self.H, self.d = H, d
        self.W_Q = nn.Parameter(gaussian_weight((H, D, d), **kw))
        self.W_K = nn.Parameter(gaussian_weight((H, D, d), **kw))
        self.W_V = nn.Parameter(gaussian_weight((H, D, d), **kw))
        self.W_O = nn.Parameter(gaussian_weight((H * d, D), **kw))
        self.W_1 = nn.Parameter(gaussian_weight((D, d_mlp), **kw))
        self.b_1 = nn.Parameter(torch.zeros(d_mlp, dtype=kw["dtype"], device=kw["device"]))
        self.W_2 = nn.Parameter(gaussian_weight((d_mlp, D), **kw))
        self.b_2 = nn.Parameter(torch.zeros(D, dtype=kw["dtype"], device=kw["device"]))
        self.ln1 = nn.LayerNorm(D, dtype=kw["dtype"], device=kw["device"])
        self.ln2 = nn.LayerNorm(D, dtype=kw["dtype"], device=kw["device"])

    def attention(self, x: torch.Tensor, kernel: str, tau: float | None,
                  opts: Mapping[str, Any]) -> torch.Tensor:
        Q = torch.einsum("bsD,hDd->bhsd", x, self.W_Q)
        K = torch.einsum("bsD,hDd->bhsd", x, self.W_K)
        return get_kernel(kernel)(Q, K, tau, **opts)

    def mha(self, x: torch.Tensor, kernel: str, tau: float | None,
            opts: Mapping[str, Any]) -> torch.Tensor:
        S = self.attention(x, kernel, tau, opts)
        V = torch.einsum("bsD,hDd->bhsd", x, self.W_V)
        heads = (S @ V).permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], self.H * self.d)
        return heads @ self.W_O

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x @ self.W_1 + self.b_1) @ self.W_2 + self.b_2

    def forward(self, x: torch.Tensor, norm: str, kernel: str, tau: float | None,
                opts: Mapping[str, Any]) -> torch.Tensor:
        if norm == "pre":
            x = x + self.mha(self.ln1(x), kernel, tau, opts)
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.mha(x, kernel, tau, opts))
        return self.ln2(x + self.mlp(x))


class TinyViT(nn.Module):
    """A small ViT classifier over patch tokens ([H24] digits task).

    Parameters
    ----------
    patch_dim : features per input token (``patch²`` for :func:`models.data.patchify`).
    n_tokens : number of patch tokens (16 for 16×16 images and 4×4 patches).
    n_classes : label classes (10 for digits).
    D, H, d, L : width, heads, head width (default ``D // H``), layers.
    d_mlp : MLP hidden width (default ``2·D``).
    kernel : a name from :data:`models.kernels.KERNELS` (``softmax``, ``normsoftmax``,
        ``normsoftmax_std``, ``temperature``, ``gaussian``, ``linear``).
    tau : kernel temperature; ``None`` means √d. Overridden by a logit multiplier.
    kernel_options : extra kernel keyword arguments.
    norm : ``"pre"`` or ``"post"`` LayerNorm placement.
    pooling : ``"cls"`` (learned CLS token) or ``"mean"`` (mean over tokens).
    probe_classes : width of the detached probe head (2 for the "match" bit); 0 disables it.
    dtype, device, seed : float64 and CPU by default; the seed fixes every weight.
    """

    def __init__(
        self,
        patch_dim: int,
        n_tokens: int,
        n_classes: int,
        *,
        D: int = 32,
        H: int = 2,
        d: int | None = None,
        L: int = 2,
        d_mlp: int | None = None,
        kernel: str = "softmax",
        tau: float | None = None,
        kernel_options: Mapping[str, Any] | None = None,
        norm: str = "pre",
        pooling: str = "cls",
        probe_classes: int = 2,
        dtype: torch.dtype | str = torch.float64,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.patch_dim = check_positive_int("patch_dim", patch_dim)
        self.n_tokens = check_positive_int("n_tokens", n_tokens)
        self.n_classes = check_positive_int("n_classes", n_classes)
        self.D = check_positive_int("D", D)
        self.H = check_positive_int("H", H)
        if d is None:
            if self.D % self.H:
                raise ValueError(f"d defaults to D // H, so H={H} must divide D={D}; or pass d")
            d = self.D // self.H
        self.d = check_positive_int("d", d)
        self.L = check_positive_int("L", L)
        self.d_mlp = 2 * self.D if d_mlp is None else check_positive_int("d_mlp", d_mlp)
        self.kernel_name = get_kernel(kernel).name
        self.tau = None if tau is None else check_positive_float("tau", tau)
        self.kernel_options = check_kernel_options(self.kernel_name, kernel_options)
        self.norm = check_choice("norm", norm, NORMS)
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        if isinstance(probe_classes, bool) or not isinstance(probe_classes, int) or probe_classes < 0:
            raise ValueError(f"probe_classes must be an integer >= 0, got {probe_classes!r}")
        self.probe_classes = probe_classes
        self.dtype = check_dtype(dtype)
        self.device = check_device(device)
        self.seed = seed
        self._logit_multiplier: float | None = None
        g = make_generator(seed)
        kw = {"generator": g, "dtype": self.dtype, "device": self.device}
        self.W_embed = nn.Parameter(gaussian_weight((self.patch_dim, self.D), **kw))
        self.pos = nn.Parameter(gaussian_weight((self.n_tokens + 1, self.D), scale=0.02, fan_in=1, **kw))
        self.cls = nn.Parameter(gaussian_weight((1, self.D), scale=0.02, fan_in=1, **kw))
        self.layers = nn.ModuleList(
            _Layer(self.D, self.d, self.H, self.d_mlp, kw) for _ in range(self.L))
        self.ln_f = nn.LayerNorm(self.D, dtype=self.dtype, device=self.device)
        self.head = nn.Linear(self.D, self.n_classes, dtype=self.dtype, device=self.device)
        self.probe = (nn.Linear(self.D, probe_classes, dtype=self.dtype, device=self.device)
                      if probe_classes else None)
        # nn.Linear draws from torch's global generator; redraw from ours so the seed fixes every weight
        with torch.no_grad():
            for lin in (self.head, self.probe):
                if lin is not None:
                    lin.weight.copy_(gaussian_weight((lin.out_features, lin.in_features), fan_in=self.D, **kw))
                    lin.bias.zero_()

    # ----------------------------------------------------------- temperature
    @property
    def logit_multiplier(self) -> float | None:
        """The current ``1/τ`` set by :meth:`set_logit_multiplier` (``None``: use ``tau``)."""
        return self._logit_multiplier

    def set_logit_multiplier(self, m: float | None) -> None:
        """Set the logit multiplier ``m = 1/τ`` ([H24] heat treatment); ``None`` resets it."""
        self._logit_multiplier = None if m is None else check_positive_float("m", m)

    def effective_tau(self) -> float:
        """τ in use: ``1/m`` when a multiplier is set, else ``tau`` or √d."""
        if self._logit_multiplier is not None:
            return 1.0 / self._logit_multiplier
        return math.sqrt(self.d) if self.tau is None else self.tau

    # --------------------------------------------------------------- forward
    def check_inputs(self, X: Any) -> torch.Tensor:
        """Validate patch tokens of shape (B, n_tokens, patch_dim)."""
        t = check_X(X, self.patch_dim, dtype=self.dtype, device=self.device)
        if t.shape[1] != self.n_tokens:
            raise ValueError(f"X has {t.shape[1]} tokens but the model was built for {self.n_tokens}")
        return t

    def _tau_for_kernel(self) -> float | None:
        if self._logit_multiplier is not None:
            return 1.0 / self._logit_multiplier
        return self.tau

    def features(self, X: torch.Tensor) -> torch.Tensor:
        """The pooled, normalised representation, shape (B, D)."""
        x = self.check_inputs(X) @ self.W_embed
        if self.pooling == "cls":
            x = torch.cat([self.cls.expand(x.shape[0], 1, self.D), x], dim=1) + self.pos
        else:
            x = x + self.pos[1:]
        tau = self._tau_for_kernel()
        for layer in self.layers:
            x = layer(x, self.norm, self.kernel_name, tau, self.kernel_options)
        x = self.ln_f(x)
        return x[:, 0] if self.pooling == "cls" else x.mean(dim=1)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (B, n_classes)."""
        return self.head(self.features(X))

    def forward_with_probe(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(label logits, probe logits)``; the probe sees the features detached."""
        z = self.features(X)
        return self.head(z), (self.probe(z.detach()) if self.probe is not None else None)

    def attention_maps(self, X: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer attention matrices, each (B, H, T, T) with T the token count."""
        x = self.check_inputs(X) @ self.W_embed
        if self.pooling == "cls":
            x = torch.cat([self.cls.expand(x.shape[0], 1, self.D), x], dim=1) + self.pos
        else:
            x = x + self.pos[1:]
        tau = self._tau_for_kernel()
        maps = []
        for layer in self.layers:
            inp = layer.ln1(x) if self.norm == "pre" else x
            maps.append(layer.attention(inp, self.kernel_name, tau, self.kernel_options))
            x = layer(x, self.norm, self.kernel_name, tau, self.kernel_options)
        return maps

    def qkv_parameters(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{"W_Q": {layer: param}, "W_K": …, "W_V": …}`` for gradient statistics."""
        return {w: {str(i): getattr(layer, w) for i, layer in enumerate(self.layers)}
                for w in ("W_Q", "W_K", "W_V")}

    def extra_repr(self) -> str:
        return (f"D={self.D}, H={self.H}, d={self.d}, L={self.L}, kernel={self.kernel_name!r}, "
                f"norm={self.norm!r}, pooling={self.pooling!r}, probe_classes={self.probe_classes}, "
                f"dtype={self.dtype}")
