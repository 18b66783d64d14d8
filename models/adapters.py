r"""Adapters: attncond's functional protocol for the user's own attention ``nn.Module``.

:class:`AdaptedModel` wraps any ``torch.nn.Module`` that contains attention and gives it the
protocol that ``spectral`` uses on attncond's own models (MATH.md §4): ``params()`` (the
selected parameters ``θ_M``), ``functional(params, *inputs)`` (the output with ``θ_M``
substituted, a thin wrapper of ``torch.func.functional_call``), ``check_inputs``,
``trainable``, ``named_parameters`` and ``attention(*inputs)`` — the attention probabilities
per layer and head with the support mask of each row (padding, causal).

Families (``family="auto"`` detects them):

=============  ==================================================================================
``"mha"``      ``torch.nn.MultiheadAttention`` (the module itself or submodules, e.g. in
               ``nn.TransformerEncoderLayer``): every call is forced to ``need_weights=True,
               average_attn_weights=False`` (the explicit softmax path, which supports
               forward-mode AD and returns per-head probabilities); eval-mode fast paths are
               avoided by running the MHA submodules with ``dropout=0`` in train mode.
``"hf"``       Hugging Face ``transformers`` models: switched to ``attn_implementation="eager"``;
               probabilities from ``output_attentions=True``; causal masks from the attention
               modules' ``is_causal``; padding from the ``attention_mask`` input.
``"timm"``     timm ``Attention`` blocks (``qkv``, ``num_heads``, ``attn_drop``, ``fused_attn``):
               ``fused_attn=False``; probabilities from a forward hook on ``attn_drop``.
``"hook"``     anything else: ``probs_module=`` names the submodule(s) whose forward *output*
               is the probability tensor ``(N, H, n_q, n_k)`` or ``(N, n_q, n_k)`` (e.g. an
               ``nn.Softmax``) — the documented hook point.
=============  ==================================================================================

Every call runs under ``torch.nn.attention.sdpa_kernel([SDPBackend.MATH])`` (``eager=True``):
the fused scaled-dot-product kernels have no forward-mode AD and no double backward, the
math backend has both. With ``eager=False`` the module runs as it is; :meth:`check_forward_ad`
then tells whether forward-mode products work, and what to do if not.

Inputs are batch-first, ``inputs[0]`` of shape ``(N, …)`` (tokens ``(N, n, D)``, ids ``(N, n)``,
images ``(N, C, H, W)``); ``attention_mask`` follows the Hugging Face convention (1 = attend,
0 = padding) with shape ``(N, n)``. The output's first axis must be the sample axis. Integer
inputs (numpy or torch) are token ids (``torch.long``); complex and boolean inputs are refused.
A bare ``nn.MultiheadAttention`` takes ``X`` or ``(query, key, value)`` (cross-attention; the
mask is then the ``(N, n_k)`` key padding); a Hugging Face model takes one input; any other
count is refused. Each set of inputs is run once through the module when it is checked, so
inputs that do not fit are refused naming them, before any Jacobian work. The keys nn.MHA
appends (``add_bias_kv``, ``add_zero_attn``) are in every row's support.
transformers and timm are never imported here: families are recognised by duck typing.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .checks import as_model_input, check_choice, check_finite, check_flag

__all__ = ["AdaptedModel", "AttentionMap", "ForwardADUnsupported", "FAMILIES", "adapt", "mha_extra_keys",
           "parameter_aliases", "select_params"]

FAMILIES = ("auto", "mha", "hf", "timm", "hook")
LOOKED_FOR = (
    "torch.nn.MultiheadAttention modules; a Hugging Face transformers model (a `config` with "
    "`_attn_implementation`); timm Attention blocks (`qkv`, `num_heads`, `attn_drop`, "
    "`fused_attn`); or a hook point given as probs_module='<submodule name pattern>' whose "
    "output is the attention probability tensor (N, H, n_q, n_k)"
)


class ForwardADUnsupported(RuntimeError):
    """Forward-mode AD (``torch.func.jvp``) fails through the model; the message says what to do."""


@dataclass(frozen=True, repr=False)
class AttentionMap:
    """Attention probabilities of one layer: ``probs`` ``(N, H, n_q, n_k)``; ``support`` a bool
    tensor broadcastable to it (``True`` where the entry may be non-zero: unmasked) or ``None``
    (no mask); ``masks`` names the masks applied (``"padding"``, ``"causal"``)."""

    layer: str
    probs: torch.Tensor
    support: torch.Tensor | None
    masks: tuple[str, ...]

    @property
    def heads(self) -> int:
        return int(self.probs.shape[1])

    def support_full(self) -> torch.Tensor:
        """``support`` expanded to the shape of ``probs`` (all ``True`` without a mask)."""
        if self.support is None:
            return torch.ones_like(self.probs, dtype=torch.bool)
        return self.support.expand_as(self.probs)

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "shape": list(self.probs.shape), "masks": list(self.masks)}

    def __repr__(self) -> str:
        return f"AttentionMap({self.layer!r}, shape={tuple(self.probs.shape)}, masks={self.masks})"


def parameter_aliases(module: nn.Module) -> dict[str, str]:
    """Tied parameters: ``{alias: canonical}`` for every name under which a parameter tensor is
    reachable besides its first one (the one ``named_parameters()`` lists).

    Examples
    --------
    >>> m = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    >>> m[1].weight = m[0].weight
    >>> parameter_aliases(m)
    {'1.weight': '0.weight'}
    """
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for k, p in module.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[k] = first[id(p)]
        else:
            first[id(p)] = k
    return aliases


def select_params(module: nn.Module, pattern: str | Sequence[str], *, name: str = "params") -> tuple[str, ...]:
    """Names of ``module.named_parameters()`` matching any ``fnmatch`` pattern (in module order).

    ``"*"`` selects everything; ``"*.query.weight"``, ``"layer.0.attention.*"`` or a list (or tuple)
    of patterns select parts. A pattern may name a tied parameter by any of its names (the alias
    ``k.weight`` of ``k.weight = q.weight`` selects ``q.weight``, the name ``named_parameters()``
    lists; see :func:`parameter_aliases`). A pattern that matches nothing raises ``ValueError``
    listing the parameter names and the ties; anything but a non-empty string or a list/tuple of
    them raises ``TypeError``. ``name`` is the argument the errors name.
    """
    if not isinstance(pattern, (str, list, tuple)):
        raise TypeError(f"{name} must be a parameter-name pattern string (fnmatch over named_parameters(), "
                        f"e.g. '*' or 'in_proj_weight') or a list/tuple of them, got {type(pattern).__name__} "
                        f"{pattern!r}")
    pats = (pattern,) if isinstance(pattern, str) else tuple(pattern)
    if not pats or not all(isinstance(p, str) and p for p in pats):
        raise TypeError(f"{name} must be a non-empty pattern string or a list of them, got {pattern!r}")
    names = [k for k, _ in module.named_parameters()]
    if not names:
        raise ValueError(f"the module {type(module).__name__} has no parameters")
    aliases = parameter_aliases(module)

    def hits(p: str) -> set[str]:
        return {k for k in names if fnmatch.fnmatchcase(k, p)} | \
            {c for a, c in aliases.items() if fnmatch.fnmatchcase(a, p)}

    chosen: set[str] = set()
    for p in pats:
        got = hits(p)
        if not got:
            shown = ", ".join(names[:60]) + (f", … ({len(names)} in all)" if len(names) > 60 else "")
            tied = "; tied parameters (one tensor, either name selects it): " + ", ".join(
                f"{a} = {c}" for a, c in aliases.items()) if aliases else ""
            raise ValueError(f"{name} pattern {p!r} matches no parameter of {type(module).__name__}; "
                             f"its parameters are: {shown}{tied}")
        chosen |= got
    return tuple(k for k in names if k in chosen)


def _shown(names: Sequence[str], limit: int = 12) -> str:
    """``a, b, c`` (the first ``limit`` names, then how many in all)."""
    return ", ".join(names[:limit]) + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _is_hf(module: nn.Module) -> bool:
    cfg = getattr(module, "config", None)
    return cfg is not None and hasattr(cfg, "_attn_implementation") and \
        type(module).__module__.startswith("transformers")


def _is_timm_attn(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("qkv", "num_heads", "attn_drop")) and hasattr(m, "fused_attn")


def _detect(module: nn.Module, probs_module: Any) -> str:
    if probs_module is not None:
        return "hook"
    if _is_hf(module):
        return "hf"
    mods = list(module.modules())
    if any(isinstance(m, nn.MultiheadAttention) for m in mods):
        return "mha"
    if any(_is_timm_attn(m) for m in mods):
        return "timm"
    raise ValueError(f"no attention found in {type(module).__name__}; looked for: {LOOKED_FOR}")


class _Call(nn.Module):
    """Wrapper so that ``functional_call`` runs a custom forward; parameters get the prefix ``m.``."""

    def __init__(self, m: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.m = m
        self.fn = fn

    def forward(self, *inputs: Any) -> Any:
        return self.fn(self.m, *inputs)


class AdaptedModel:
    """attncond's functional protocol for a foreign attention module (module docstring).

    Parameters
    ----------
    module : the ``nn.Module`` (weights as they are; random init or the user's own).
    inputs : example inputs, a tensor or a tuple of tensors (batch-first, see module docstring).
        Floating data must have the model's dtype; integer data (numpy or torch) is kept as
        ``torch.long`` token ids; complex and boolean data are refused. A bare
        ``nn.MultiheadAttention`` takes ``X`` (self-attention) or ``(query, key, value)``
        (cross-attention: ``J`` with respect to the parameters, maps ``(N, H, n_q, n_k)``).
        One forward on them runs at construction: inputs that do not fit the module are
        refused here, naming them, not later inside torch.
    params : ``fnmatch`` pattern or list of patterns over ``module.named_parameters()``: the
        parameters ``θ_M`` that ``J = ∂ vec(output)/∂θ_M`` is taken over. ``None`` (default):
        every parameter with ``requires_grad=True`` (frozen ones are left out, with a note
        naming them); every parameter if all are frozen (with a note). ``"*"``: all, frozen
        included. A tied parameter may be named by any of its names.
    output : which output to differentiate: ``None`` (the family's default: the MHA output,
        ``last_hidden_state`` or the first output), an attribute/key name, an index, or a
        callable ``out -> Tensor``.
    forward : ``forward(module, *inputs) -> out``, overriding the family's default call.
    attention_mask : optional ``(N, n)`` padding mask (1 = attend, 0 = padding: 0/1 values of any
        real dtype, or booleans; anything else is refused); appended to the inputs and passed to
        the module (``key_padding_mask`` for nn.MHA).
    causal : ``True``/``False``, or ``None`` to detect (HF ``is_causal``); for nn.MHA it also
        applies the causal ``attn_mask``.
    family : one of :data:`FAMILIES`.
    probs_module : hook point for ``family="hook"``: pattern(s) of submodule names whose output
        is the probability tensor.
    eager : bool: run under the math SDPA backend and switch HF/timm models to eager attention.

    Raises
    ------
    TypeError
        a bad argument type (``params`` not a pattern or a list/tuple of them, ``causal`` or
        ``eager`` not a bool); complex or boolean inputs; a floating input of another dtype.
    ValueError
        a pattern matching no parameter; no attention found; inputs or a mask that do not fit
        the module (wrong count, width or length, or the module's forward fails on them); a mask
        with values other than 0/1.
    """

    def __init__(
        self,
        module: nn.Module,
        inputs: Any,
        *,
        params: str | Sequence[str] | None = None,
        output: str | int | Callable[[Any], torch.Tensor] | None = None,
        forward: Callable[..., Any] | None = None,
        attention_mask: Any = None,
        causal: bool | None = None,
        family: str = "auto",
        probs_module: str | Sequence[str] | None = None,
        eager: bool = True,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        check_choice("family", family, FAMILIES)
        if forward is not None and not callable(forward):
            raise TypeError(f"forward must be callable(module, *inputs), got {type(forward).__name__}")
        if causal is not None and not isinstance(causal, bool):
            raise TypeError(f"causal must be a bool or None, got {causal!r}")
        if output is not None and not isinstance(output, (str, int)) and not callable(output):
            raise TypeError(f"output must be None, a name, an index or a callable, got {output!r}")
        eager = check_flag("eager", eager)
        self.module = module
        self.family = _detect(module, probs_module) if family == "auto" else family
        if self.family == "hook" and probs_module is None:
            raise ValueError("family='hook' needs probs_module=<submodule name pattern(s)>")
        self.probs_module = probs_module
        self.notes: list[str] = []
        self.trainable = self._select_params(params)
        ps = dict(module.named_parameters())
        self.dtype = ps[self.trainable[0]].dtype
        self.device = ps[self.trainable[0]].device
        self.eager = eager
        self._has_mask = attention_mask is not None
        self._output = output
        self._user_forward = forward
        self.causal = self._detect_causal() if causal is None else causal
        if self._has_mask and forward is None and self.family not in ("hf",) and \
                not isinstance(module, nn.MultiheadAttention):
            raise ValueError("attention_mask for a module that is neither nn.MultiheadAttention nor a Hugging "
                             "Face model needs forward=(module, *inputs, mask) -> output to say where it goes")
        self._switch_eager()
        self._wrapper = _Call(module, self._forward)
        self._attn_modules = self._find_attention()
        raw = inputs if isinstance(inputs, tuple) else (inputs,)
        self.inputs, captured = self._probe_forward(
            self._convert_inputs(raw + ((attention_mask,) if self._has_mask else ())))
        if causal is None and not self.causal:
            self._hint_causal(captured)

    # ------------------------------------------------------------------ set-up
    def _select_params(self, params: str | Sequence[str] | None) -> tuple[str, ...]:
        """The selected names, with notes on frozen parameters and tied aliases (class docstring)."""
        ps = dict(self.module.named_parameters())
        if params is None:
            names = select_params(self.module, "*")
            frozen = [k for k in names if not ps[k].requires_grad]
            if frozen and len(frozen) < len(names):
                self.notes.append(f"params=None: left out {len(frozen)} frozen parameters "
                                  f"(requires_grad=False): {_shown(frozen)}; params='*' includes them")
                return tuple(k for k in names if ps[k].requires_grad)
            if frozen:
                self.notes.append("params=None: every parameter is frozen (requires_grad=False); all "
                                  f"{len(names)} are selected")
            return names
        names = select_params(self.module, params)
        frozen = [k for k in names if not ps[k].requires_grad]
        if frozen:
            self.notes.append(f"the selection includes {len(frozen)} frozen parameters (requires_grad=False): "
                              f"{_shown(frozen)}")
        pats = (params,) if isinstance(params, str) else tuple(params)
        for a, c in parameter_aliases(self.module).items():
            hit = [fnmatch.fnmatchcase(a, p) for p in pats]
            if any(hit) and not any(fnmatch.fnmatchcase(c, p) for p in pats):
                self.notes.append(f"{a} is tied to {c} (one tensor): selected as {c}")
        return names

    def _detect_causal(self) -> bool:
        if self.family != "hf":
            return False
        return any(getattr(m, "is_causal", False) is True for m in self.module.modules())

    def _switch_eager(self) -> None:
        if not self.eager:
            self.notes.append("eager=False: the module runs as given (fused kernels may lack forward AD)")
            return
        if self.family == "hf":
            cfgs = {id(c): c for m in self.module.modules() if (c := getattr(m, "config", None)) is not None
                    and hasattr(c, "_attn_implementation")}
            changed = [c for c in cfgs.values() if c._attn_implementation != "eager"]
            for c in cfgs.values():
                c._attn_implementation = "eager"
            if changed:
                self.notes.append("switched the Hugging Face model to attn_implementation='eager' "
                                  "(fused SDPA has no forward-mode AD; eager returns the probabilities)")
        for m in self.module.modules():
            if _is_timm_attn(m) and getattr(m, "fused_attn", False):
                m.fused_attn = False
                self.notes.append("set fused_attn=False on timm Attention blocks")
        self.notes.append("calls run under the math SDPA backend (forward-mode AD supported)")

    def _find_attention(self) -> list[tuple[str, nn.Module]]:
        named = list(self.module.named_modules())
        if self.family == "mha":
            found = [(k or "<module>", m) for k, m in named if isinstance(m, nn.MultiheadAttention)]
        elif self.family == "timm":
            found = [(k or "<module>", m.attn_drop) for k, m in named if _is_timm_attn(m)]
        elif self.family == "hook":
            pats = (self.probs_module,) if isinstance(self.probs_module, str) else tuple(self.probs_module)
            found = [(k, m) for k, m in named if k and any(fnmatch.fnmatchcase(k, p) for p in pats)]
            if not found:
                raise ValueError(f"probs_module {self.probs_module!r} matches no submodule of "
                                 f"{type(self.module).__name__}; submodules: {[k for k, _ in named if k][:60]}")
        else:
            return []
        if not found:
            raise ValueError(f"no attention found in {type(self.module).__name__} for family "
                             f"{self.family!r}; looked for: {LOOKED_FOR}")
        return found

    # ------------------------------------------------------------------ inputs
    def check_inputs(self, inputs: Any) -> tuple[torch.Tensor, ...]:
        """Validate an input tuple (the mask last when the model has ``attention_mask``).

        Tensors (numpy accepted): floating data of the model's dtype, integer data kept as
        ``torch.long`` token ids, complex and boolean data refused; one sample axis ``N`` first;
        the count and widths the family takes (a bare ``nn.MultiheadAttention``: ``X`` or
        ``(query, key, value)``; a Hugging Face model: one input); the mask ``(N, n)`` of 0/1
        values (``(N, n_k)`` for cross-attention). Then one forward on them: a module that
        fails on the inputs is refused here, naming them.

        Parameters
        ----------
        inputs : a tensor or a tuple of tensors.

        Returns
        -------
        tuple of torch.Tensor
            the inputs as the model takes them.

        Raises
        ------
        TypeError
            complex, boolean or non-numeric data; a floating input of another dtype.
        ValueError
            NaN/inf; a missing sample axis; disagreeing ``N``; the wrong count or width; a mask
            that does not fit; a forward that fails on the inputs.
        """
        return self._probe_forward(self._convert_inputs(inputs))[0]

    def _convert_inputs(self, inputs: Any) -> tuple[torch.Tensor, ...]:
        """Dtype, sample-axis, count/width and mask checks of :meth:`check_inputs` (no forward)."""
        raw = inputs if isinstance(inputs, tuple) else (inputs,)
        n_main = len(raw) - (1 if self._has_mask else 0)
        if n_main < 1:
            raise ValueError("inputs must hold at least one tensor" + (" besides attention_mask"
                                                                         if self._has_mask else ""))
        out = []
        for j, x in enumerate(raw):
            name = "attention_mask" if j == n_main else f"inputs[{j}]"
            if j == n_main:
                t = _as_mask(x, self.device)
            else:
                t = as_model_input(name, x, dtype=self.dtype, device=self.device)
            if t.ndim < 1 or t.shape[0] < 1:
                raise ValueError(f"{name} must have a leading sample axis N >= 1, got shape {tuple(t.shape)}")
            out.append(t)
        N = out[0].shape[0]
        for j, t in enumerate(out[1:n_main], start=1):
            if t.shape[0] != N:
                raise ValueError(f"inputs[{j}] has {t.shape[0]} samples along dim 0, inputs[0] has {N}")
        X = tuple(out[:n_main])
        cross = False
        if self._user_forward is None and self.family == "hf" and n_main != 1:
            raise ValueError(f"a Hugging Face model takes one input here (input_ids, inputs_embeds or "
                             f"pixel_values; padding via attention_mask=), got {n_main} inputs; pass "
                             "forward=(module, *inputs) -> output to route more")
        if self._user_forward is None and isinstance(self.module, nn.MultiheadAttention):
            _check_mha_inputs(self.module, X, self.causal)
            cross = n_main == 3
        if self._has_mask:
            self._check_mask(out[-1], X[1] if cross else X[0], "inputs[1] (key)" if cross else "inputs[0]")
        return tuple(out)

    def _check_mask(self, mask: torch.Tensor, X: torch.Tensor, name: str = "inputs[0]") -> None:
        want = (X.shape[0], X.shape[1]) if X.ndim >= 2 else None
        if mask.ndim != 2 or want is None or tuple(mask.shape) != want:
            raise ValueError(f"attention_mask must have shape (N, n) = {want} to fit {name} of shape "
                             f"{tuple(X.shape)}, got {tuple(mask.shape)}")
        if not bool((mask != 0).any(dim=1).all()):
            raise ValueError("attention_mask has a sample with every token masked: its rows are undefined")

    def _probe_forward(self, ins: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...],
                                                                      list[tuple[str, torch.Tensor]]]:
        """One forward (no grad) on converted inputs, before any work; a failure inside the module
        is re-raised as ``ValueError`` naming the inputs. Returns the inputs and the captured
        probabilities (empty for Hugging Face models)."""
        try:
            with torch.no_grad(), self._context():
                if self.family == "hf":
                    out, got = self._forward(self.module, *ins), []
                else:
                    out, got = self._hooked(ins)
        except Exception as exc:  # noqa: BLE001 - any failure of the user's module on these inputs
            names = [f"inputs[{j}]" for j in range(len(ins))]
            if self._has_mask:
                names[-1] = "attention_mask"
            shown = ", ".join(f"{k} {str(t.dtype).replace('torch.', '')} {tuple(t.shape)}"
                              for k, t in zip(names, ins, strict=True))
            ids = [k for k, t in zip(names, ins, strict=True)
                   if not t.is_floating_point() and k != "attention_mask"]
            hint = (f"; {', '.join(ids)} hold integers, kept as token ids (torch.long): pass data as "
                    f"{str(self.dtype).replace('torch.', '')}") if ids else ""
            first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            raise ValueError(f"the inputs do not fit {type(self.module).__name__} ({shown}): its forward "
                             f"raised {type(exc).__name__}: {first}{hint}") from exc
        self._select(out)
        return ins, got

    def _hint_causal(self, probs: list[tuple[str, torch.Tensor]]) -> None:
        """Note (no change) when captured attention is exactly 0 above the diagonal everywhere."""
        hit = []
        for name, P in probs:
            if P.ndim < 2 or P.shape[-1] != P.shape[-2] or P.shape[-1] < 2:
                continue
            n = P.shape[-1]
            upper = torch.ones(n, n, dtype=torch.bool, device=P.device).triu(1).expand_as(P)
            lower = torch.ones(n, n, dtype=torch.bool, device=P.device).tril(-1).expand_as(P)
            if bool((P.masked_select(upper) == 0).all()) and bool((P.masked_select(lower) != 0).any()):
                hit.append(name)
        if hit:
            self.notes.append(f"attention of {', '.join(hit)} is exactly 0 everywhere above the diagonal: a "
                              "causal mask? pass causal=True so that κ(J(s)) is taken over each row's causal "
                              "support (the masked zeros otherwise make κ = inf)")

    # ------------------------------------------------------------------ calls
    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        """Deterministic evaluation: eval mode (no dropout), nn.MHA in train mode with dropout 0
        (no fused fast path), forced need_weights, and the math SDPA backend when ``eager``."""
        saved = [(m, m.training) for m in self.module.modules()]
        mhas = [m for m in self.module.modules() if isinstance(m, nn.MultiheadAttention)]
        drops = [(m, m.dropout) for m in mhas]
        handles = [m.register_forward_pre_hook(_force_weights, with_kwargs=True) for m in mhas]
        self.module.eval()
        for m in mhas:
            m.train()
            m.dropout = 0.0
        try:
            if self.eager:
                from torch.nn.attention import SDPBackend, sdpa_kernel

                with sdpa_kernel([SDPBackend.MATH]):
                    yield
            else:
                yield
        finally:
            for h in handles:
                h.remove()
            for m, d in drops:
                m.dropout = d
            for m, t in saved:
                m.training = t

    def _forward(self, m: nn.Module, *inputs: torch.Tensor) -> Any:
        if self._user_forward is not None:
            return self._user_forward(m, *inputs)
        X, mask = (inputs[:-1], inputs[-1]) if self._has_mask else (inputs, None)
        if self.family == "hf":
            return self._hf_call(m, X, mask, output_attentions=False)
        if isinstance(m, nn.MultiheadAttention):
            return _mha_call(m, X, mask, self.causal)
        return m(*X)

    def _hf_call(self, m: nn.Module, X: tuple[torch.Tensor, ...], mask: Any, output_attentions: bool) -> Any:
        kw: dict[str, Any] = {}
        main = getattr(m, "main_input_name", "input_ids")
        x = X[0]
        key = "inputs_embeds" if (main == "input_ids" and x.is_floating_point()) else main
        kw[key] = x
        if mask is not None:  # a prepared 4-D additive mask: HF's own mask builder branches on the
            # data (`padding_mask.all()`), which torch.func.vmap cannot trace; 4-D masks are used as given
            kw["attention_mask"] = self._additive_mask(mask, x.shape[1], x.dtype if x.is_floating_point()
                                                       else self.dtype)
        if output_attentions:
            kw["output_attentions"] = True
        return m(*X[1:], **kw)

    def _additive_mask(self, mask: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
        """``(N, 1, n, n)`` additive mask: 0 where attended (padding and, if causal, ``j ≤ i``),
        ``finfo.min`` elsewhere (its softmax weight is exactly 0)."""
        allowed = (mask != 0)[:, None, None, :].expand(mask.shape[0], 1, n, mask.shape[-1])
        if self.causal:
            allowed = allowed & torch.ones(n, mask.shape[-1], dtype=torch.bool, device=mask.device).tril()
        zero = torch.zeros((), dtype=dtype, device=mask.device)
        low = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=mask.device)
        return torch.where(allowed, zero, low)

    def _select(self, out: Any) -> torch.Tensor:
        sel = self._output
        if callable(sel):
            t = sel(out)
        elif isinstance(sel, str):
            t = out[sel] if isinstance(out, Mapping) else getattr(out, sel)
        elif isinstance(sel, int):
            t = out[sel]
        elif isinstance(out, torch.Tensor):
            t = out
        elif hasattr(out, "last_hidden_state") and out.last_hidden_state is not None:
            t = out.last_hidden_state
        elif isinstance(out, (tuple, list)) or hasattr(out, "to_tuple"):
            t = out[0]
        else:
            raise TypeError(f"cannot pick a tensor from the output of type {type(out).__name__}; pass output=")
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"the selected output is {type(t).__name__}, not a tensor; pass output=")
        return t

    def params(self) -> dict[str, torch.Tensor]:
        """Detached copies of the selected parameters ``θ_M``, in module order."""
        ps = dict(self.module.named_parameters())
        return {k: ps[k].detach().clone() for k in self.trainable}

    def check_params(self, params: Any) -> dict[str, torch.Tensor]:
        """Validate substitute values for some of the module's parameters, ``{name: tensor}``.

        Every name must be one of ``module.named_parameters()`` (a misspelt name would otherwise be
        ignored by ``functional_call`` and give a structurally zero Jacobian); every value a finite
        tensor of that parameter's shape, dtype and device.

        Parameters
        ----------
        params : mapping of parameter names to tensors (e.g. :meth:`params`, or a part of it).

        Returns
        -------
        dict of str to torch.Tensor
            the same entries, in the given order.

        Raises
        ------
        TypeError
            ``params`` not a mapping; a value that is not a tensor or has another dtype.
        ValueError
            an empty mapping; a name the module does not have (the error lists the known ones and
            says which unknown names are tied aliases); another shape or device; NaN/inf.
        """
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping {{name: tensor}} over the module's named_parameters() "
                            f"(e.g. model.params()), got {type(params).__name__}")
        if not params:
            raise ValueError("params must hold at least one parameter {name: tensor}")
        ps = dict(self.module.named_parameters())
        unknown = [k for k in params if k not in ps]
        if unknown:
            aliases = parameter_aliases(self.module)
            tied = [f"{k!r} is tied to {aliases[k]!r} (pass it under that name)"
                    for k in unknown if k in aliases]
            close = {k: difflib.get_close_matches(k, list(ps), n=1) for k in unknown if k not in aliases}
            hints = tied + [f"{k!r}: did you mean {c[0]!r}?" for k, c in close.items() if c]
            hint = f" ({'; '.join(hints)})" if hints else ""
            raise ValueError(f"params has {len(unknown)} name(s) that are not parameters of "
                             f"{type(self.module).__name__}: {unknown}{hint}. Its parameters "
                             f"(named_parameters()) are: {_shown(list(ps), 60)}")
        out: dict[str, torch.Tensor] = {}
        for k, v in params.items():
            want = ps[k]
            name = f"params[{k!r}]"
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"{name} must be a torch tensor of shape {tuple(want.shape)}, dtype "
                                f"{want.dtype}, got {type(v).__name__}")
            if v.dtype != want.dtype:
                raise TypeError(f"{name} has dtype {v.dtype}, the module's {k} has {want.dtype}; cast it with "
                                f".to({want.dtype})")
            if tuple(v.shape) != tuple(want.shape):
                raise ValueError(f"{name} has shape {tuple(v.shape)}, the module's {k} has {tuple(want.shape)}")
            if v.device != want.device:
                raise ValueError(f"{name} is on device {v.device}, the module's {k} on {want.device}")
            check_finite(name, v)
            out[k] = v
        return out

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The wrapped module's ``named_parameters()``."""
        return self.module.named_parameters()

    def functional(self, params: Mapping[str, torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
        """The selected output with ``params`` substituted (the rest as stored); composable with
        ``torch.func`` (``jvp``, ``vjp``, ``jacrev``, ``vmap``). Inputs are not re-validated."""
        p = {"m." + k: v for k, v in params.items()}
        with self._context():
            return self._select(torch.func.functional_call(self._wrapper, p, inputs))

    __call__ = functional

    def loss(self, params: Mapping[str, torch.Tensor], *inputs_and_y: torch.Tensor) -> torch.Tensor:
        """``½ ‖f(θ; inputs) − y‖²`` with ``y`` the last argument (reshaped to the output)."""
        *inputs, y = inputs_and_y
        out = self.functional(params, *inputs)
        r = out - y.reshape(out.shape)
        return 0.5 * (r * r).sum()

    def output(self) -> torch.Tensor:
        """The selected output at the stored weights and example inputs."""
        with torch.no_grad():
            return self.functional(self.params(), *self.inputs)

    def check_forward_ad(self) -> None:
        """One ``torch.func.jvp`` through the model; raises :class:`ForwardADUnsupported` with advice."""
        p = self.params()
        g = torch.Generator(device="cpu").manual_seed(0)
        t = {k: torch.randn(v.shape, generator=g, dtype=v.dtype).to(v.device) for k, v in p.items()}
        try:
            torch.func.jvp(lambda q: self.functional(q, *self.inputs), (p,), (t,))
        except (NotImplementedError, RuntimeError) as exc:
            raise ForwardADUnsupported(
                f"forward-mode AD (J·v by torch.func.jvp) fails through {type(self.module).__name__}: "
                f"{str(exc).splitlines()[0]}. Fix: keep eager=True (the default: math SDPA backend, "
                "eager attention for Hugging Face, fused_attn=False for timm), or build the model with "
                "attn_implementation='eager' / call nn.MultiheadAttention with need_weights=True. Without "
                "forward AD, diagnose uses the reverse-mode routes only (per-sample Gram), and Hessian "
                "rows are unavailable.") from exc

    # ------------------------------------------------------------------ attention capture
    def attention(self, *inputs: Any) -> tuple[AttentionMap, ...]:
        """Attention probabilities per layer ``(N, H, n_q, n_k)`` with their support masks."""
        ins = self.check_inputs(tuple(inputs)) if inputs else self.inputs
        mask = ins[-1] if self._has_mask else None
        with torch.no_grad(), self._context():
            if self.family == "hf":
                X = ins[:-1] if self._has_mask else ins
                out = self._hf_call(self.module, X, mask, output_attentions=True)
                atts = getattr(out, "attentions", None)
                if not atts:
                    raise ValueError(f"{type(self.module).__name__} returned no attentions with "
                                     f"output_attentions=True; looked for: {LOOKED_FOR}")
                probs = [(f"layer.{i}", a) for i, a in enumerate(atts)]
            else:
                probs = self._hooked(ins)[1]
        extra = {name: mha_extra_keys(m) for name, m in self._attn_modules} if self.family == "mha" else {}
        return tuple(self._attach(name, P, mask, extra.get(name, 0)) for name, P in probs)

    def _hooked(self, ins: tuple[torch.Tensor, ...]) -> tuple[Any, list[tuple[str, torch.Tensor]]]:
        """The module's output on ``ins`` and the probabilities captured at the hook points."""
        got: list[tuple[str, torch.Tensor]] = []
        handles = []
        for name, m in self._attn_modules:
            if self.family == "mha":
                def hook(mod: nn.Module, args: Any, out: Any, name: str = name) -> None:
                    got.append((name, out[1].detach()))
            elif self.family == "timm":
                def hook(mod: nn.Module, args: Any, out: Any, name: str = name) -> None:
                    got.append((name, args[0].detach()))
            else:
                def hook(mod: nn.Module, args: Any, out: Any, name: str = name) -> None:
                    t = out[0] if isinstance(out, (tuple, list)) else out
                    got.append((name, t.detach()))
            handles.append(m.register_forward_hook(hook))
        try:
            out = self._forward(self.module, *ins)
        finally:
            for h in handles:
                h.remove()
        return out, got

    def _attach(self, name: str, P: torch.Tensor, mask: torch.Tensor | None, extra: int = 0) -> AttentionMap:
        """The map with its support: padding (a mask of the ``n_k − extra`` real keys) and causal
        (``tril(n_r − n_q)`` over the real keys) on the first ``n_r = n_k − extra`` keys; the
        ``extra`` keys nn.MHA *appends* (``add_bias_kv``, then ``add_zero_attn``) are attended by
        every row (torch pads both masks with "attend" for them)."""
        if P.ndim == 3:
            P = P.unsqueeze(1)
        if P.ndim != 4:
            raise ValueError(f"attention probabilities of {name} have shape {tuple(P.shape)}; expected "
                             "(N, H, n_q, n_k) or (N, n_q, n_k)")
        N, _, nq, nk = P.shape
        nr = nk - extra
        if nr < 1:
            raise ValueError(f"attention of {name} has {nk} keys, fewer than the {extra} appended extra keys")
        sup = None
        masks: list[str] = []
        if mask is not None and mask.shape[-1] == nr:
            sup = (mask != 0).reshape(N, 1, 1, nr)
            masks.append("padding")
        elif mask is not None:
            self.notes.append(f"{name} attends over {nr} keys but attention_mask has {mask.shape[-1]}: the "
                              "padding mask is not applied to this layer (its support is every key)")
        if self.causal:
            c = self._causal_support(name, P[..., :nr], nq, nr, sup)
            sup = c if sup is None else sup & c
            masks.append("causal")
        if sup is not None and extra:
            sup = sup.expand(sup.shape[0], 1, nq, nr)
            sup = torch.cat([sup, sup.new_ones(sup.shape[0], 1, nq, extra)], dim=-1)
        return AttentionMap(name, P, sup, tuple(masks))

    def _causal_support(self, name: str, P: torch.Tensor, nq: int, nr: int,
                        padding: torch.Tensor | None) -> torch.Tensor:
        """``(1, 1, n_q, n_r)`` causal support. With ``n_q = n_r`` it is ``tril(0)``. Otherwise two
        alignments are in use: bottom-right, ``tril(n_r − n_q)`` (the last query sees every key, as
        with a key cache), and top-left, ``tril(0)`` (torch SDPA's ``is_causal``). One contains the
        other; the smaller is taken when the model's attention is exactly 0 on their difference
        (where ``padding`` leaves keys attended), the larger otherwise, and a note names the choice.
        (Mass outside the chosen support is then refused by the support check.)"""
        ones = torch.ones(nq, nr, dtype=torch.bool, device=P.device)
        if nq == nr:
            return ones.tril(0).reshape(1, 1, nq, nr)
        cands = {"bottom-right tril(n_k − n_q)": ones.tril(nr - nq), "top-left tril(0)": ones.tril(0)}
        (small_name, small), (large_name, large) = sorted(cands.items(), key=lambda kv: int(kv[1].sum()))
        band = (large & ~small).expand_as(P)
        if padding is not None:
            band = band & padding.expand_as(P)
        vanishes = bool(band.any()) and bool((P.masked_select(band) == 0).all())
        chosen, sup = (small_name, small) if vanishes else (large_name, large)
        self.notes.append(f"{name}: causal with n_q={nq} ≠ n_k={nr}: the {chosen} alignment fits its attention")
        return sup.reshape(1, 1, nq, nr)

    def describe(self) -> dict[str, Any]:
        """Family, selected parameters (names and count), input shapes, masks and notes."""
        ps = dict(self.module.named_parameters())
        return {"module": type(self.module).__name__, "family": self.family,
                "params": list(self.trainable), "n_params": int(sum(ps[k].numel() for k in self.trainable)),
                "inputs": [list(t.shape) for t in self.inputs], "causal": self.causal,
                "padding_mask": self._has_mask, "dtype": str(self.dtype).replace("torch.", ""),
                "notes": list(dict.fromkeys(self.notes))}

    def __repr__(self) -> str:
        d = self.describe()
        return (f"AdaptedModel({d['module']}, family={d['family']!r}, params={len(d['params'])} tensors/"
                f"{d['n_params']} entries, inputs={d['inputs']}, causal={d['causal']})")


def _force_weights(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Forward pre-hook: ``need_weights=True, average_attn_weights=False`` whether the caller passed
    them by keyword or by position (``mha(q, k, v, None, False)``): the call is bound to the
    module's ``forward`` signature and the two arguments replaced there."""
    try:
        bound = inspect.signature(type(mod).forward).bind(mod, *args, **kwargs)
    except TypeError:  # not the nn.MHA signature (a subclass): keywords, and torch's own error if any
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}
    bound.arguments["need_weights"] = True
    bound.arguments["average_attn_weights"] = False
    return bound.args[1:], bound.kwargs


def mha_extra_keys(m: nn.MultiheadAttention) -> int:
    """Keys ``nn.MultiheadAttention`` appends after the ``n_k`` given ones: 1 for ``add_bias_kv``
    (``bias_k``), 1 more for ``add_zero_attn``; its maps are ``(N, H, n_q, n_k + extra)``."""
    return int(m.bias_k is not None) + int(bool(m.add_zero_attn))


def _as_mask(x: Any, device: torch.device) -> torch.Tensor:
    """``attention_mask`` as an integer tensor (bool and float 0/1 accepted; complex refused)."""
    if not isinstance(x, (torch.Tensor, np.ndarray, list, tuple)):
        raise TypeError(f"attention_mask must be a numpy array or torch tensor, got {type(x).__name__}")
    t = torch.as_tensor(np.asarray(x) if isinstance(x, (list, tuple)) else x, device=device)
    if t.is_complex():
        raise TypeError(f"attention_mask must be real 0/1 values, got {t.dtype}")
    if t.dtype != torch.bool:  # checked before the cast: 0.5 would become 0 (padding), 2.7 would become 2
        bad = ~((t == 0) | (t == 1))
        if bool(bad.any()):
            shown = torch.unique(t[bad]).tolist()
            raise ValueError(f"attention_mask must hold 0/1 values or booleans (1 = attend, 0 = padding); "
                             f"got {int(bad.sum())} other entries: {shown[:6]}{' …' if len(shown) > 6 else ''}")
    return t.to(torch.long) if t.is_floating_point() or t.dtype == torch.bool else t


def _check_mha_inputs(m: nn.MultiheadAttention, X: tuple[torch.Tensor, ...], causal: bool) -> None:
    """A bare nn.MHA takes ``X`` ``(N, n, embed_dim)`` or ``(query, key, value)`` of widths
    ``(embed_dim, kdim, vdim)``, keys and values of one length ``n_k``; ``causal`` needs ``n_q = n_k``."""
    if len(X) not in (1, 3):
        raise ValueError(f"nn.MultiheadAttention takes inputs X (self-attention) or (query, key, value) "
                         f"(cross-attention), got {len(X)} inputs; for key = value pass the tensor twice")
    if len(X) == 1 and (m.kdim != m.embed_dim or m.vdim != m.embed_dim):
        raise ValueError(f"nn.MultiheadAttention with kdim={m.kdim}, vdim={m.vdim} != embed_dim={m.embed_dim} "
                         "needs inputs (query, key, value), got one input")
    names = ("inputs[0]",) if len(X) == 1 else ("inputs[0] (query)", "inputs[1] (key)", "inputs[2] (value)")
    widths = (("embed_dim", m.embed_dim), ("kdim", m.kdim), ("vdim", m.vdim))
    for t, name, (w, D) in zip(X, names, widths[:len(X)], strict=True):
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating data (N, n, {w}={D}) for nn.MultiheadAttention, "
                            f"got {t.dtype}")
        if t.ndim != 3 or t.shape[-1] != D:
            raise ValueError(f"{name} must have shape (N, n, {w}={D}), got {tuple(t.shape)}")
    if len(X) == 3:
        if X[1].shape[1] != X[2].shape[1]:
            raise ValueError(f"inputs[1] (key) and inputs[2] (value) must have the same length n_k, got "
                             f"{X[1].shape[1]} and {X[2].shape[1]}")
        if causal and X[0].shape[1] != X[1].shape[1]:
            raise ValueError(f"causal=True with cross-attention needs n_q = n_k, got n_q={X[0].shape[1]}, "
                             f"n_k={X[1].shape[1]}; pass forward= with your own attn_mask")


def _mha_call(m: nn.MultiheadAttention, X: tuple[torch.Tensor, ...], mask: torch.Tensor | None,
              causal: bool) -> torch.Tensor:
    """``nn.MultiheadAttention`` on batch-first inputs: self-attention on ``X = (x,)`` ``(N, n, D)``
    or cross-attention on ``X = (query, key, value)``; ``mask`` the ``(N, n_k)`` padding (1 =
    attend); ``causal`` the ``(n, n)`` causal ``attn_mask``. Output ``(N, n_q, D)``."""
    q = X[0]
    if q.ndim != 3 or q.shape[-1] != m.embed_dim:
        raise ValueError(f"inputs[0] must have shape (N, n, embed_dim={m.embed_dim}), got {tuple(q.shape)}")
    k, v = (q, q) if len(X) == 1 else (X[1], X[2])
    attn_mask = None
    if causal:
        attn_mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device).triu(1)
    kpm = None if mask is None else (mask == 0)
    if not m.batch_first:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    out = m(q, k, v, key_padding_mask=kpm, attn_mask=attn_mask)
    return out[0] if m.batch_first else out[0].transpose(0, 1)


def adapt(module: nn.Module, inputs: Any, **kw: Any) -> AdaptedModel:
    """``AdaptedModel(module, inputs, **kw)``; an :class:`AdaptedModel` is returned unchanged."""
    if isinstance(module, AdaptedModel):
        return module
    return AdaptedModel(module, inputs, **kw)
