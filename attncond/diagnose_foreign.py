"""``attncond diagnose --model PKG.MODULE:FACTORY`` / ``--hf-config CONFIG.json``: the user's own model.

* ``--model PKG.MODULE:FACTORY``: ``FACTORY()`` (importable from the current directory) returns
  ``(module, example_inputs)``, ``(module, example_inputs, adapt_kwargs)`` or a ready
  :class:`attncond.models.AdaptedModel`; ``adapt_kwargs`` are passed to ``models.adapt``
  (``params``, ``attention_mask``, ``causal``, ``output``, ``forward``, ``probs_module`` …).
* ``--hf-config CONFIG.json [--weights DIR]``: a Hugging Face model built from a local config
  (``AutoConfig.for_model``) with random weights, or the weights in the local folder ``DIR``
  (``from_pretrained(DIR, local_files_only=True)``); never a hub download (``HF_HUB_OFFLINE=1``).
  Inputs are random: ``inputs_embeds`` of shape ``(N, n, hidden)`` for text models,
  ``pixel_values`` ``(N, C, S, S)`` for vision models (``--N``, ``--n``, ``--seed``), float64.
* ``--params PATTERN[,PATTERN…]`` selects the parameters (fnmatch over ``named_parameters``).

Prints the diagnostics table and a per-layer/per-head table (softmax-Jacobian κ on each row's
support, entropy / log k, sparsity); ``--json`` prints strict JSON; ``--plot FILE.png`` draws
the singular values of ``J`` and the per-row κ of each layer.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from attncond.models import AdaptedModel, adapt
from attncond.spectral.diagnostics import Diagnostics, diagnose

from .options import split_names
from .report import format_table, pyplot, save_figure, to_json


class ModelSpecError(ValueError):
    """``--model`` / ``--hf-config`` could not be turned into an adapted model; the message says why."""


def load_factory(spec: str, params: list[str] | None) -> AdaptedModel:
    """``PKG.MODULE:FACTORY`` → :class:`AdaptedModel` (see the module docstring)."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ModelSpecError(f"--model must look like PKG.MODULE:FACTORY, got {spec!r}")
    mod_name, fn_name = spec.split(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelSpecError(f"--model: cannot import {mod_name!r}: {exc}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ModelSpecError(f"--model: {mod_name!r} has no callable {fn_name!r}")
    got = fn()
    if isinstance(got, AdaptedModel):
        if params:
            raise ModelSpecError("--params cannot re-select the parameters of a ready AdaptedModel; "
                                 "return (module, inputs) from the factory instead")
        return got
    if not isinstance(got, tuple) or len(got) not in (2, 3):
        raise ModelSpecError(f"--model: {spec} must return (module, inputs), (module, inputs, adapt_kwargs) "
                             f"or an AdaptedModel, got {type(got).__name__}")
    kw = dict(got[2]) if len(got) == 3 else {}
    if params:
        kw["params"] = params
    return adapt(got[0], got[1], **kw)


def load_hf(config: str, weights: str | None, params: list[str] | None, N: int, n: int,
            seed: int) -> AdaptedModel:
    """A Hugging Face model from a local config (random init) or local weights, adapted."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        import transformers as tr
    except ImportError as exc:
        raise ModelSpecError("--hf-config needs transformers: pip install 'attncond[hf]'") from exc
    p = Path(config)
    if not p.is_file():
        raise ModelSpecError(f"--hf-config: file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelSpecError(f"--hf-config {p}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ModelSpecError(f"--hf-config {p}: needs a 'model_type' key (e.g. \"bert\", \"gpt2\", \"vit\")")
    data.setdefault("attn_implementation", "eager")
    try:
        cfg = tr.AutoConfig.for_model(**data)
    except (ValueError, KeyError) as exc:
        raise ModelSpecError(f"--hf-config {p}: {exc}") from None
    torch.manual_seed(seed)
    if weights is not None:
        if not Path(weights).is_dir():
            raise ModelSpecError(f"--weights must be a local folder, got {weights!r}")
        model = tr.AutoModel.from_pretrained(weights, config=cfg, local_files_only=True)
    else:
        model = tr.AutoModel.from_config(cfg)
    model = model.double().eval()
    g = torch.Generator().manual_seed(seed)
    if getattr(model, "main_input_name", "input_ids") == "pixel_values":
        C, S = int(getattr(cfg, "num_channels", 3)), int(getattr(cfg, "image_size", 224))
        X = torch.randn(N, C, S, S, generator=g, dtype=torch.float64)
    else:
        hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0))
        X = torch.randn(N, n, hidden, generator=g, dtype=torch.float64)
    return adapt(model, X, params=params)


def head_rows(d: Diagnostics) -> list[dict[str, Any]]:
    """One row per (layer, head): κ(J(s)) median/max on the support, entropy / log k, sparsity."""
    rows = []
    for a in d.foreign.attention if d.foreign is not None else ():
        for h in range(len(a.kappa_median)):
            rows.append({"layer": a.layer, "head": h, "masks": "+".join(a.masks) or "-",
                         "kappa_median": float(a.kappa_median[h]), "kappa_max": float(a.kappa_max[h]),
                         "entropy/log k": float(a.normalized_entropy[h]), "sparsity": float(a.sparsity[h]),
                         "singular rows": int(a.n_singular[h])})
    return rows


def strict_json(x: Any) -> Any:
    """Non-finite floats as the strings ``"inf"``, ``"-inf"``, ``"nan"`` (strict JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: strict_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [strict_json(v) for v in x]
    return x


def plot_foreign(d: Diagnostics, path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    s = d.spectra.get("J")
    if s is not None:
        axes[0].semilogy([x for x in s if x > 0], marker=".", ms=2, lw=0.8)
    axes[0].set_title("singular values of J (selected parameters)", fontsize=10)
    axes[0].set_xlabel("index i (descending)")
    for k, v in d.spectra.items():
        if k.startswith("softmaxJ_kappa[") and len(v):
            axes[1].semilogy(v[::-1], marker=".", ms=2, lw=0.8, label=k[len("softmaxJ_kappa["):-1])
    axes[1].set_title("κ(J(s)) on each row's support, sorted", fontsize=10)
    axes[1].set_xlabel("row (descending κ)")
    if axes[1].lines:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def foreign_cmd(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.config:
        raise ModelSpecError("--config describes attncond's own models; it cannot be combined with "
                             "--model / --hf-config")
    params = split_names(args.params) if args.params else None
    if args.model and args.hf_config:
        raise ModelSpecError("give one of --model and --hf-config, not both")
    if args.weights and not args.hf_config:
        raise ModelSpecError("--weights goes with --hf-config")
    if args.model:
        a = load_factory(args.model, params)
    else:
        a = load_hf(args.hf_config, args.weights, params, args.N or 2, args.n or 8, args.seed or 0)
    d = diagnose(a, hessian=False)
    if args.json:
        doc = {"model": a.describe(), "diagnostics": d.to_dict(), "seconds": time.perf_counter() - t0}
        print(json.dumps(strict_json(json.loads(to_json(doc))), indent=2, allow_nan=False))
    else:
        per_head = [r for r in d.rows if r.key.startswith("attn.") and ".h" in r.key]
        print(dataclasses.replace(d, rows=tuple(r for r in d.rows if r not in per_head)).table())
        print()
        print(format_table(head_rows(d), title="per layer and head (over each row's support)"))
        print(f"({time.perf_counter() - t0:.1f} s)")
    if args.plot:
        plot_foreign(d, args.plot)
    return 0

