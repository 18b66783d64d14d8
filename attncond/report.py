"""Rendering: plain-text tables, JSON, and the optional matplotlib import."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
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


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def to_json(obj: Any) -> str:
    """JSON with inf/nan kept as the JavaScript literals Python's json emits."""
    return json.dumps(obj, indent=2, default=_json_default)


def pyplot():
    """Import matplotlib with a non-interactive backend, or explain how to get it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover
        raise SystemExit("--plot needs matplotlib: pip install 'attncond[plot]'") from exc
    return plt
