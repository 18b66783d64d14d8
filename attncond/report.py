"""Rendering: plain-text tables, JSON, and the optional matplotlib import."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def fmt(v: Any) -> str:
    """Compact human formatting for table cells."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == 0:
            return "0"
        return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
                 title: str | None = None) -> str:
    """Left-aligned text table of ``rows`` (dicts) over ``columns``."""
    if not rows:
        return (title + "\n" if title else "") + "(no rows)"
    cols = list(columns) if columns else list(rows[0])
    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))  # lines are rstripped below
    out = [title] if title else []
    out += [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(ln.rstrip() for ln in out)


#: How every ``--json`` output and ``results.json`` spell the non-finite floats (strict JSON has none).
NONFINITE: dict[str, float] = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values, with non-finite floats as the strings ``"inf"``, ``"-inf"``, ``"nan"``.

    Handles dicts (keys become strings), lists, tuples, sets (sorted), records with ``to_dict()``,
    numpy/torch scalars and arrays (``tolist()``), ``pathlib`` paths and anything else via ``str``.
    ``float`` subclasses such as ``numpy.float64`` are converted too, so the result always passes
    ``json.dumps(..., allow_nan=False)``. Decode with :func:`from_json`.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        f = float(obj)
        if math.isfinite(f):
            return f
        return "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return [jsonable(v) for v in sorted(obj, key=repr)]
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    if hasattr(obj, "tolist"):  # numpy/torch arrays and scalars (numpy ints are not int subclasses)
        return jsonable(obj.tolist())
    return str(obj)


def to_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (see :func:`jsonable`; ``NaN``/``Infinity`` never appear)."""
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def from_json(text: str) -> Any:
    """Parse strict JSON written by :func:`to_json`; ``"inf"``/``"-inf"``/``"nan"`` become floats again.

    The bare literals ``NaN``/``Infinity`` are refused (they are not JSON). Strings other than those
    three are kept, so a field that is a genuine string ``"nan"`` cannot be told apart: the encoding is
    meant for numeric fields.
    """
    def fix(o: Any) -> Any:
        if isinstance(o, str):
            return NONFINITE.get(o, o)
        if isinstance(o, dict):
            return {k: fix(v) for k, v in o.items()}
        if isinstance(o, list):
            return [fix(v) for v in o]
        return o
    return fix(json.loads(text, parse_constant=_reject_constant))


def pyplot():
    """Import matplotlib with a non-interactive backend, or explain how to get it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover
        raise SystemExit("--plot needs matplotlib: pip install 'attncond[plot]'") from exc
    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int) -> None:
    """Write ``fig`` to ``path`` and close it, creating missing folders first: ``--plot`` paths are
    checked before the work (:func:`attncond.options.check_plot_path` accepts missing folders below a
    writable one), so the figure must not fail on them after it."""
    plt = pyplot()
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)

