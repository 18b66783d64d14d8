"""Replayable counterexamples: each one saved as ``.npz`` (weights, data, config) and re-evaluated.

:func:`save_counterexample` writes ``<dir>/<theorem id>__<n>.npz`` holding

* ``config`` — JSON: the theorem id, the instance (a tagged dataclass tree), the margin and the seed;
* ``weights/<name>`` and ``data/<name>`` — the tensors the instance builds (:func:`instance_tensors`).

:func:`replay` rebuilds the instance from the config, checks that it rebuilds the stored tensors
bit for bit (so the file is evidence, not only a recipe), re-evaluates the theorem and returns the
new :class:`~proofs_check.theorems.base.CheckResult` with the stored margin beside it.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from .base import CheckResult
from .registry import get_theorem

__all__ = ["Replay", "save_counterexample", "replay", "instance_to_json", "instance_from_json",
           "instance_tensors"]

FORMAT = "attncond-counterexample/1"


def instance_to_json(x: Any) -> Any:
    """A JSON-able tagged tree of a (nested) frozen-dataclass instance; tuples are tagged too."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        cls = type(x)
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: instance_to_json(getattr(x, f.name)) for f in dataclasses.fields(x)}}
    if isinstance(x, tuple):
        return {"__tuple__": [instance_to_json(v) for v in x]}
    if isinstance(x, list):
        return [instance_to_json(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return {"__float__": repr(x)}
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"cannot save instance field of type {type(x).__name__}; instances must be frozen "
                    f"dataclasses of numbers, strings, tuples and nested dataclasses")


def instance_from_json(obj: Any, allowed_modules: tuple[str, ...] = ("attncond.",)) -> Any:
    """Inverse of :func:`instance_to_json`; dataclasses only from modules starting with ``allowed_modules``."""
    if isinstance(obj, list):
        return [instance_from_json(v, allowed_modules) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tuple__" in obj:
        return tuple(instance_from_json(v, allowed_modules) for v in obj["__tuple__"])
    if "__float__" in obj:
        return float(obj["__float__"])
    mod, _, name = str(obj.get("__dataclass__", "")).partition(":")
    if not mod or not any(mod.startswith(p) for p in allowed_modules):
        raise ValueError(f"counterexample file names a class outside {allowed_modules}: {mod}:{name}")
    cls = importlib.import_module(mod)
    for part in name.split("."):
        cls = getattr(cls, part)
    if not dataclasses.is_dataclass(cls):
        raise ValueError(f"{mod}:{name} is not a dataclass")
    return cls(**{k: instance_from_json(v, allowed_modules) for k, v in obj["fields"].items()})


def _configs_of(inst: Any) -> list[tuple[str, Any]]:
    """Every buildable config inside ``inst`` (itself, or a field such as ``config``/``block``)."""
    if hasattr(inst, "build") and callable(inst.build):
        return [("", inst)]
    out = []
    if dataclasses.is_dataclass(inst):
        for f in dataclasses.fields(inst):
            v = getattr(inst, f.name)
            if hasattr(v, "build") and callable(v.build):
                out.append((f.name + "/", v))
    return out


def instance_tensors(inst: Any) -> dict[str, np.ndarray]:
    """The tensors an instance builds: ``weights/<param>`` and ``data/X``, ``data/y`` for every
    buildable config in it; ``data/<field>`` for tuple-of-number fields (e.g. a probability vector)."""
    out: dict[str, np.ndarray] = {}
    for prefix, cfg in _configs_of(inst):
        model, X, y = cfg.build()
        for k, v in model.state_dict().items():
            out[f"weights/{prefix}{k}"] = v.detach().cpu().numpy()
        out[f"data/{prefix}X"] = X.detach().cpu().numpy()
        out[f"data/{prefix}y"] = y.detach().cpu().numpy()
    if dataclasses.is_dataclass(inst):
        for f in dataclasses.fields(inst):
            v = getattr(inst, f.name)
            if isinstance(v, tuple) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                  for x in v):
                out[f"data/{f.name}"] = np.asarray(v, dtype=np.float64)
    return out


def save_counterexample(result: CheckResult, directory: str | Path, *, seed: int | None = None,
                        index: int = 0) -> Path:
    """Write ``result`` (a failing :class:`CheckResult`) as ``.npz``; returns the path."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ValueError(f"--save-counterexamples {d} exists and is not a directory")
    d.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", result.theorem_id)
    path = d / f"{safe}__{index}.npz"
    config = {"format": FORMAT, "theorem_id": result.theorem_id, "instance": instance_to_json(result.instance),
              "margin": repr(float(result.margin)), "holds": result.holds, "seed": seed,
              "instance_repr": repr(result.instance)}
    arrays = {k.replace("/", "__"): v for k, v in instance_tensors(result.instance).items()}
    np.savez(path, config=np.array(json.dumps(config)), **arrays)
    return path


@dataclasses.dataclass(frozen=True)
class Replay:
    """A replayed counterexample: the stored and the recomputed margin, and whether the instance
    rebuilt the stored tensors exactly (``tensors_match``; ``mismatched`` names any that differ)."""

    path: str
    theorem_id: str
    instance: Any
    stored_margin: float
    result: CheckResult
    tensors_match: bool
    mismatched: tuple[str, ...]

    @property
    def margin(self) -> float:
        return self.result.margin

    @property
    def same_margin(self) -> bool:
        a, b = self.stored_margin, self.margin
        return a == b or (math.isnan(a) and math.isnan(b))

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "theorem_id": self.theorem_id, "instance": repr(self.instance),
                "stored_margin": self.stored_margin, "margin": self.margin, "same_margin": self.same_margin,
                "tensors_match": self.tensors_match, "mismatched": list(self.mismatched),
                "result": self.result.to_dict()}


def replay(path: str | Path) -> Replay:
    """Load a saved counterexample, rebuild and compare its tensors, and re-evaluate its theorem."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--replay {p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            config = json.loads(str(z["config"]))
            stored = {k.replace("__", "/"): z[k] for k in z.files if k != "config"}
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"--replay {p}: not a saved counterexample ({exc})") from exc
    if config.get("format") != FORMAT:
        raise ValueError(f"--replay {p}: unknown format {config.get('format')!r} (expected {FORMAT})")
    thm = get_theorem(config["theorem_id"])
    allowed = ("attncond.", thm.instance_type.__module__)
    inst = instance_from_json(config["instance"], allowed)
    rebuilt = instance_tensors(inst)
    bad = tuple(sorted(k for k in set(stored) | set(rebuilt)
                       if k not in stored or k not in rebuilt or not np.array_equal(stored[k], rebuilt[k])))
    return Replay(str(p), thm.id, inst, float(config["margin"]), thm.check(inst), not bad, bad)
