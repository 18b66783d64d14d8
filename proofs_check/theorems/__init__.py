"""Theorem registry (MATH.md §5): every claim as an object, ``check`` on one instance, and
``search`` for a counterexample with Hypothesis, with measured power and vacuity.

>>> from proofs_check.theorems import THEOREMS, get_theorem, check
>>> thm = get_theorem("S24.thm1.rank")
>>> check("S24.thm1.rank", thm.violating_instance()).holds      # HD < Nn
False

Claims enter the registry only through :func:`register` (with their instance strategy and one
violating strategy per assumption); the built-in ones register when their module is imported
below. ``search(theorem_id, max_examples=200, seed=0, power=False)`` returns a :class:`SearchReport`
whose ``verdict`` is held / finding / inconclusive / low power (:mod:`.search`).
"""

from __future__ import annotations

import importlib
from typing import Any

from ..configs import AttentionConfig, BlockConfig

# the built-in claims register on import; this order is the registry's (and `attncond check all`'s)
for _module in ("i25", "s24", "s24_thm2", "q25", "h24"):
    importlib.import_module(f".{_module}", __name__)

from .base import Assumption, CheckResult, Conclusion, Theorem, jsonable  # noqa: E402
from .i25 import ProbabilityInstance  # noqa: E402
from .q25 import FFNRateInstance  # noqa: E402
from .registry import THEOREMS, Entry, entry, get_theorem, instances, register, unregister, violating_instances  # noqa: E402
from .replay import Replay, replay, save_counterexample  # noqa: E402
from .s24 import RateInstance  # noqa: E402
from .s24_thm2 import Thm2Instance  # noqa: E402
from .search import POWER_FLOOR, SearchReport, VariantPower, clopper_pearson, search  # noqa: E402

__all__ = [
    "THEOREMS",
    "Theorem",
    "Assumption",
    "Conclusion",
    "CheckResult",
    "SearchReport",
    "VariantPower",
    "Entry",
    "Replay",
    "AttentionConfig",
    "BlockConfig",
    "RateInstance",
    "Thm2Instance",
    "FFNRateInstance",
    "ProbabilityInstance",
    "POWER_FLOOR",
    "register",
    "unregister",
    "entry",
    "get_theorem",
    "instances",
    "violating_instances",
    "check",
    "search",
    "clopper_pearson",
    "save_counterexample",
    "replay",
    "jsonable",
]


def check(theorem_id: str, instance: Any) -> CheckResult:
    """Evaluate theorem ``theorem_id``'s assumptions and conclusion on ``instance``."""
    return get_theorem(theorem_id).check(instance)
