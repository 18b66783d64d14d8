"""``attncond diagnose``: conditioning diagnostics of the [S24] and [Q25] models (MATH.md §4).

With ``--model PKG.MODULE:FACTORY`` or ``--hf-config CONFIG.json`` it diagnoses the user's own
model instead (:mod:`attncond.diagnose_foreign`).

For every kernel it builds, on the same synthetic data and seed, the [S24]
:class:`models.MultiHeadAttention` (``B0``, ``β``, the exact PL constant ``μ`` and the corrected
bound, softmax-Jacobian spectrum, attention entropy/sparsity, Hessian extremes) and the [Q25]
:class:`models.AttentionBlock` (``κ(Z)`` with and without the residual, Weyl bound), and prints
one table with a column per kernel. Options come from flags or a TOML file (``--config``);
explicit flags override the file.

TOML keys (all optional; flat, no tables)::

    kernels = ["softmax", "gaussian"]   # or kernel = "softmax"
    N = 6
    n = 4
    D = 8
    d = 4
    H = 4
    residual = "both"                   # "on", "off" or "both"
    regime = "default"                  # "near_uniform", "default", "sharp"
    init_scale = 1.0
    seed = 0
    dtype = "float64"
    device = "cpu"
    value_param = "per_head"            # or "joint"
    trainable = ["W_Q", "W_K", "W_V"]
    hessian = true
    tau = 2.0                           # kernel temperature (default sqrt(d))
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attncond.models import REGIMES, AttentionBlock, MultiHeadAttention, get_kernel, synthetic_regression
from attncond.models.attention import PARAM_NAMES, VALUE_PARAMS
from attncond.spectral.diagnostics import ROWS, Diagnostics, diagnose

from .options import MAX_SEED, MAX_SIZE, check_device, split_names
from .progress import progress
from .report import format_table, pyplot, save_figure, to_json

DEFAULTS: dict[str, Any] = {
    "kernels": ["softmax", "gaussian"], "N": 6, "n": 4, "D": 8, "d": 4, "H": 4, "residual": "both",
    "regime": "default", "init_scale": 1.0, "seed": 0, "dtype": "float64", "device": "cpu",
    "value_param": "per_head", "trainable": ["W_Q", "W_K", "W_V"], "hessian": True, "tau": None,
}


class ConfigError(ValueError):
    """A configuration value or file is wrong; the message names the file, line and key."""


# ------------------------------------------------------------------ validators (value -> value)
def _pos_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"must be a positive integer, got {v!r}")
    if v > MAX_SIZE:
        raise ValueError(f"must be a positive integer <= {MAX_SIZE} (2**31 - 1), got {v!r}")
    return v


def _nonneg_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"must be a non-negative integer, got {v!r}")
    if v > MAX_SEED:
        raise ValueError(f"must be a non-negative integer <= {MAX_SEED} (2**63 - 1), got {v!r}")
    return v


def _pos_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"must be a finite number > 0, got {v!r}")
    return float(v)


def _choice(options: Any) -> Callable[[Any], str]:
    opts = list(options)

    def check(v: Any) -> str:
        if v not in opts:
            raise ValueError(f"must be one of {opts}, got {v!r}")
        return v
    return check


def _kernel(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"must be a kernel name, got {v!r}")
    get_kernel(v)
    return v


def _kernels(v: Any) -> list[str]:
    items = split_names(v) if isinstance(v, str) else v
    if not isinstance(items, list) or not items:
        raise ValueError(f"must be a non-empty list of kernel names, got {v!r}")
    return [_kernel(k) for k in items]


def _trainable(v: Any) -> list[str]:
    items = split_names(v) if isinstance(v, str) else v
    if not isinstance(items, list) or not items or any(k not in PARAM_NAMES for k in items):
        raise ValueError(f"must be a non-empty list drawn from {list(PARAM_NAMES)}, got {v!r}")
    return list(items)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, got {v!r}")
    return v


def _device(v: Any) -> str:
    """The spelling only: whether the device exists is checked where the work runs (check_device)."""
    if not isinstance(v, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|mps", v):
        raise ValueError(f"must be 'cpu', 'cuda', 'cuda:<k>' or 'mps', got {v!r}")
    return v


def _tau(v: Any) -> float | None:
    return None if v is None else _pos_float(v)


VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "kernels": _kernels, "kernel": _kernel, "N": _pos_int, "n": _pos_int, "D": _pos_int, "d": _pos_int,
    "H": _pos_int, "residual": _choice(("on", "off", "both")), "regime": _choice(REGIMES),
    "init_scale": _pos_float, "seed": _nonneg_int, "dtype": _choice(("float32", "float64")),
    "device": _device, "value_param": _choice(VALUE_PARAMS), "trainable": _trainable, "hessian": _bool,
    "tau": _tau,
}


# ------------------------------------------------------------------ TOML with line numbers
def key_line(text: str, key: str, section: str | None = None) -> int | None:
    """1-based line of ``key = …`` inside ``[section]`` (top level when ``None``), if found."""
    current: str | None = None
    pat = re.compile(r'^\s*["\']?' + re.escape(key) + r'["\']?\s*=')
    for no, line in enumerate(text.splitlines(), 1):
        head = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", line)
        if head:
            current = head.group(1)
            if section is None and current == key:  # the key names a table
                return no
            continue
        if current == section and pat.match(line):
            return no
    return None


def where(path: str | Path, text: str, key: str, section: str | None = None) -> str:
    """``"file line L: key 'k'"`` (or ``"file: key 'k'"`` when the line is unknown)."""
    line = key_line(text, key, section)
    q = f"{section}.{key}" if section else key
    return f"{path} line {line}: key {q!r}" if line else f"{path}: key {q!r}"


def read_toml(path: str | Path) -> tuple[dict[str, Any], str]:
    """Parse a TOML file; a syntax error becomes a :class:`ConfigError` naming the line."""
    import tomllib

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder, not a TOML file")
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not a UTF-8 text file (byte {exc.start}): TOML must be UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        loc = f" line {m.group(1)}" if m else ""
        raise ConfigError(f"{p}{loc}: malformed TOML: {exc}") from None


def validate(cfg: dict[str, Any], *, path: str | Path = "<flags>", text: str = "",
             section: str | None = None) -> dict[str, Any]:
    """Check every key and value of a diagnose config; errors name the file, line and key."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if k not in VALIDATORS:
            raise ConfigError(f"{where(path, text, k, section)}: unknown key; known: {sorted(VALIDATORS)}")
        try:
            out[k] = VALIDATORS[k](v)
        except ValueError as exc:
            raise ConfigError(f"{where(path, text, k, section)}: {exc}") from None
    if "kernel" in out:
        out["kernels"] = [out.pop("kernel")]
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a diagnose TOML file (flat keys, see the module docstring)."""
    data, text = read_toml(path)
    for k, v in data.items():
        if isinstance(v, dict):
            raise ConfigError(f"{where(path, text, k)}: tables are not allowed in a diagnose config "
                              f"(found [{k}]); use flat keys")
    return validate(data, path=path, text=text)


# ------------------------------------------------------------------ running
def build_models(cfg: dict[str, Any], kernel: str) -> tuple[MultiHeadAttention, AttentionBlock]:
    """The [S24] model and the [Q25] block (no FFN) for one kernel, same seed and regime."""
    common = {"kernel": kernel, "tau": cfg["tau"], "regime": cfg["regime"], "init_scale": cfg["init_scale"],
              "dtype": cfg["dtype"], "device": cfg["device"], "seed": cfg["seed"]}
    if "on_underflow" in get_kernel(kernel).options:  # the registry says which kernels can underflow
        common["kernel_options"] = {"on_underflow": "ignore"}
    mh = MultiHeadAttention(cfg["D"], cfg["d"], cfg["H"], value_param=cfg["value_param"],
                            trainable=tuple(cfg["trainable"]), **common)
    block = AttentionBlock(cfg["D"], cfg["d"], residual=True, ffn=False, **common)
    return mh, block


def run_config(cfg: dict[str, Any], *, show_progress: bool = True) -> dict[str, dict[str, Diagnostics]]:
    """``{kernel: {"mh": Diagnostics, "block": Diagnostics}}`` for a validated, complete config."""
    data = synthetic_regression(cfg["N"], cfg["n"], cfg["D"], seed=cfg["seed"], dtype=cfg["dtype"],
                                device=cfg["device"])
    jobs = [(k, which) for k in cfg["kernels"] for which in ("mh", "block")]
    out: dict[str, dict[str, Diagnostics]] = {}
    for k, which in progress(jobs, desc="diagnose", disable=not show_progress):
        mh, block = build_models(cfg, k)
        if which == "mh":
            dg = diagnose(mh, data.X, data.y if cfg["hessian"] else None, residual=cfg["residual"])
        else:
            dg = diagnose(block, data.X, residual=cfg["residual"])
        out.setdefault(k, {})[which] = dg
    return out


#: the comparison table's rows per model, from the one ROWS table of spectral.diagnostics
TABLE_KEYS = {kind: tuple(r.key for r in ROWS if r.table and kind in r.applies_to) for kind in ("mh", "block")}
NOTE_KEYS = frozenset(r.key for r in ROWS if r.table_note)


def wide_rows(results: dict[str, dict[str, Diagnostics]]) -> list[dict[str, Any]]:
    """One row per diagnostic, one column per kernel, and a ``note`` column with reasons."""
    kernels = list(results)
    rows: list[dict[str, Any]] = []
    for which, tag in (("mh", "[S24] MH"), ("block", "[Q25] block")):
        keys = TABLE_KEYS[which]
        for key in keys:
            found = {k: {r.key: r for r in results[k][which].rows}.get(key) for k in kernels}
            if all(v is None for v in found.values()):
                continue
            label = next(v.label for v in found.values() if v is not None)
            row: dict[str, Any] = {"diagnostic": f"{tag} {label}"}
            notes: dict[str, str] = {}
            for k in kernels:
                r = found[k]
                if r is None:
                    row[k] = "-"
                elif not r.defined:
                    row[k] = "undefined"
                    notes[k] = str(r.note)
                else:
                    row[k] = r.value
                    if r.note and key in NOTE_KEYS:
                        notes[k] = r.note
            if len(kernels) > 1 and len(notes) == len(kernels) and len(set(notes.values())) == 1:
                row["note"] = next(iter(notes.values()))  # the same for every kernel: say it once
            else:
                row["note"] = "; ".join(f"{k}: {v}" for k, v in notes.items())
            rows.append(row)
    return rows


def plot_spectra(results: dict[str, dict[str, Diagnostics]], path: str) -> None:
    """Log-scale spectra: σ(B0), σ(Z) with and without residual, eigenvalues of J(s) on 1⊥."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    styles = {"Z_res": ("-", "with residual"), "Z_plain": ("--", "plain")}
    for i, (k, res) in enumerate(results.items()):
        color = f"C{i % 10}"
        sp_mh, sp_b = res["mh"].spectra, res["block"].spectra
        if "B0" in sp_mh:
            axes[0].semilogy(sp_mh["B0"], marker=".", color=color, label=k)
        for tag, (ls, what) in styles.items():
            if tag in sp_b:
                axes[1].semilogy(sp_b[tag], ls, marker=".", color=color, label=f"{k}, {what}")
        if "softmaxJ" in sp_mh:
            ev = sp_mh["softmaxJ"]
            axes[2].semilogy(ev[ev > 0][::-1], marker=".", ms=2, lw=0.8, color=color, label=k)
    titles = ("singular values of B0 [S24]", "singular values of Z [Q25]",
              "eigenvalues of J(s) on 1⊥, all rows [I25]")
    ylabels = (r"$\sigma_i(B_0)$", r"$\sigma_i(Z)$", r"$\lambda_i(J(s))$ on $\mathbf{1}^\perp$")
    for ax, t, yl in zip(axes, titles, ylabels, strict=True):
        ax.set_title(t, fontsize=10)
        ax.set_xlabel("index i (descending)")
        ax.set_ylabel(yl)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "undefined for these kernels", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def diagnose_cmd(args: argparse.Namespace) -> int:
    if args.model or args.hf_config:  # the user's own model
        from .diagnose_foreign import foreign_cmd

        return foreign_cmd(args)
    if args.params or args.weights:
        raise ValueError("--params and --weights go with --model or --hf-config")
    t0 = time.perf_counter()
    cfg = dict(DEFAULTS)
    if args.config:
        cfg.update(load_config(args.config))
    flags = {k: getattr(args, k) for k in VALIDATORS if getattr(args, k, None) is not None}
    if args.kernels is not None:
        flags["kernels"] = args.kernels
    cfg.update(validate(flags, path="command line"))
    check_device(cfg["device"], f"{args.config}: key 'device'" if "device" not in flags and args.config
                 else "--device")
    results = run_config(cfg, show_progress=not args.json)
    if args.json:
        print(to_json({"config": cfg, "results": {k: {w: dg.to_dict() for w, dg in v.items()}
                                                  for k, v in results.items()},
                       "seconds": time.perf_counter() - t0}))
    else:
        title = (f"attncond diagnose: N={cfg['N']} n={cfg['n']} D={cfg['D']} d={cfg['d']} H={cfg['H']} "
                 f"(Nn={cfg['N'] * cfg['n']}, HD={cfg['H'] * cfg['D']}), regime={cfg['regime']}, "
                 f"init_scale={cfg['init_scale']}, seed={cfg['seed']}, {cfg['dtype']}, "
                 f"trainable={','.join(cfg['trainable'])}")
        rows = wide_rows(results)
        print(format_table(rows, ["diagnostic", *results, "note"], title=title))
        print(f"({time.perf_counter() - t0:.1f} s)")
    if args.plot:
        plot_spectra(results, args.plot)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagnose", help="conditioning diagnostics (B0, beta vs mu, kappa(Z), softmax J)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file (flags override it)")
    p.add_argument("--kernels", help=f"comma-separated kernels (default {','.join(DEFAULTS['kernels'])})")
    for k, typ in (("N", int), ("n", int), ("D", int), ("d", int), ("H", int), ("seed", int)):
        p.add_argument(f"--{k}", type=typ, help=f"default {DEFAULTS[k]}")
    p.add_argument("--residual", help="on, off or both (default both)")
    p.add_argument("--regime", help="near_uniform, default or sharp (default default)")
    p.add_argument("--init-scale", dest="init_scale", type=float, help="W_Q/W_K scale multiplier (default 1)")
    p.add_argument("--dtype", help="float64 (default) or float32")
    p.add_argument("--device", help="cpu (default) or cuda[:k]")
    p.add_argument("--value-param", dest="value_param", help="per_head (default) or joint")
    p.add_argument("--trainable", help="comma-separated subset of W_Q,W_K,W_V,W_O (default W_Q,W_K,W_V)")
    p.add_argument("--tau", type=float, help="kernel temperature (default sqrt(d))")
    p.add_argument("--hessian", dest="hessian", action="store_true", default=None,
                   help="Hessian extremes (default)")
    p.add_argument("--no-hessian", dest="hessian", action="store_false", help="skip the Hessian")
    p.add_argument("--model", metavar="PKG.MODULE:FACTORY",
                   help="your own model: FACTORY() returns (module, example_inputs[, adapt_kwargs])")
    p.add_argument("--hf-config", dest="hf_config", metavar="CONFIG.json",
                   help="a Hugging Face model from a local config file (random init; never downloaded)")
    p.add_argument("--weights", metavar="DIR", help="with --hf-config: load weights from this local folder")
    p.add_argument("--params", metavar="PATTERN[,PATTERN]",
                   help="with --model/--hf-config: parameters to differentiate (fnmatch: '*.query.weight')")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", metavar="FILE.png", help="log-scale spectra figure")
    p.set_defaults(func=diagnose_cmd)
