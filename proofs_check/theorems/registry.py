"""One registry of claims: each theorem registers together with its Hypothesis strategies.

:func:`register` is the only way in (the built-in claims of MATH.md §5 call it when their module
is imported; a user calls it for their own claim). An entry holds

* the :class:`~proofs_check.theorems.base.Theorem`;
* ``strategy`` — instances satisfying the (prior) assumptions, biased toward the region where the
  bound is not vacuous (``bias`` says how);
* ``violations`` — for each named assumption, a strategy of instances that violate it (and satisfy
  the others): dropping the assumption must make the claim fail or become vacuous, which is what
  ``attncond check --power`` measures.

``strategies.py`` knows nothing of this module; theorem modules import strategies, never the reverse.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .base import Theorem

__all__ = [
    "Entry",
    "register",
    "unregister",
    "entry",
    "get_theorem",
    "instances",
    "violating_instances",
    "registered",
    "THEOREMS",
]

StrategyLike = Any  # a hypothesis SearchStrategy, or a zero-argument callable returning one


@dataclass(frozen=True)
class Entry:
    """A registered claim: the theorem, its instance strategy and one violating strategy per assumption."""

    theorem: Theorem
    strategy: StrategyLike
    violations: Mapping[str, StrategyLike] = field(default_factory=dict)
    bias: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"theorem": self.theorem.describe(), "violations": sorted(self.violations), "bias": self.bias}


_ENTRIES: dict[str, Entry] = {}


class _TheoremView(Mapping):
    """Read-only ``id -> Theorem`` view of the registry (kept in registration order)."""

    def __getitem__(self, key: str) -> Theorem:
        return _ENTRIES[key].theorem

    def __iter__(self) -> Iterator[str]:
        return iter(_ENTRIES)

    def __len__(self) -> int:
        return len(_ENTRIES)

    def __repr__(self) -> str:
        return f"THEOREMS({', '.join(_ENTRIES)})"


THEOREMS: Mapping[str, Theorem] = _TheoremView()


def _is_strategy(s: Any) -> bool:
    from hypothesis.strategies import SearchStrategy

    return isinstance(s, SearchStrategy) or callable(s)


def register(
    theorem: Theorem,
    strategy: StrategyLike,
    *,
    violations: Mapping[str, StrategyLike] | None = None,
    bias: str | None = None,
    replace: bool = False,
) -> Theorem:
    """Add ``theorem`` with its instance ``strategy`` (and optional per-assumption ``violations``).

    Parameters
    ----------
    theorem : a :class:`Theorem` instance with a new ``id`` (``replace=True`` to overwrite one).
    strategy : a Hypothesis strategy of ``theorem.instance_type`` instances, or a zero-argument
        callable returning one (built lazily on first use).
    violations : ``{assumption name: strategy}`` drawing instances that violate that assumption.
    bias : how ``strategy`` leans toward non-vacuous draws (reported by ``attncond check``).

    Returns the theorem. Raises ``TypeError``/``ValueError`` naming the bad argument.
    """
    if not isinstance(theorem, Theorem):
        raise TypeError(f"theorem must be a proofs_check Theorem instance, got {type(theorem).__name__}")
    if not isinstance(theorem.id, str) or not theorem.id or any(c.isspace() for c in theorem.id):
        raise ValueError(f"theorem.id must be a non-empty string without spaces, got {theorem.id!r}")
    if not isinstance(theorem.instance_type, type):
        raise TypeError(f"theorem.instance_type must be a class, got {theorem.instance_type!r}")
    if not _is_strategy(strategy):
        raise TypeError(
            f"strategy for {theorem.id} must be a hypothesis strategy or a callable returning one, "
            f"got {type(strategy).__name__}"
        )
    violations = dict(violations or {})
    for name, s in violations.items():
        if not isinstance(name, str) or not _is_strategy(s):
            raise TypeError(
                f"violations for {theorem.id} must map assumption names to strategies; bad entry {name!r}"
            )
    if theorem.id in _ENTRIES and not replace:
        raise ValueError(f"theorem id {theorem.id!r} is already registered (pass replace=True to overwrite)")
    _ENTRIES[theorem.id] = Entry(theorem, strategy, violations, bias)
    return theorem


def unregister(theorem_id: str) -> None:
    """Remove a registered claim (for users' tests); an unknown id raises ``ValueError``."""
    entry(theorem_id)
    del _ENTRIES[theorem_id]


def entry(theorem_id: str) -> Entry:
    """The registry entry of ``theorem_id``; an unknown id lists the known ones."""
    if not isinstance(theorem_id, str):
        raise TypeError(f"theorem_id must be a string, got {type(theorem_id).__name__}")
    if theorem_id not in _ENTRIES:
        raise ValueError(f"unknown theorem id {theorem_id!r}; known: {', '.join(_ENTRIES)}")
    return _ENTRIES[theorem_id]


def get_theorem(theorem_id: str) -> Theorem:
    """The registered theorem ``theorem_id``; an unknown id lists the known ones."""
    return entry(theorem_id).theorem


def _build(s: StrategyLike):
    from hypothesis.strategies import SearchStrategy

    out = s if isinstance(s, SearchStrategy) else s()
    if not isinstance(out, SearchStrategy):
        raise TypeError(
            f"a registered strategy factory returned {type(out).__name__}, not a hypothesis strategy"
        )
    return out


def instances(theorem_id: str):
    """Instances of ``theorem_id`` that satisfy its prior assumptions (drawn by construction, then
    filtered with :meth:`Theorem.prior_assumptions_hold`)."""
    e = entry(theorem_id)
    return _build(e.strategy).filter(e.theorem.prior_assumptions_hold)


def violating_instances(theorem_id: str, assumption: str):
    """Instances of ``theorem_id`` violating ``assumption`` and satisfying every other prior assumption."""
    e = entry(theorem_id)
    if assumption not in e.violations:
        known = ", ".join(e.violations) or "none"
        raise ValueError(f"{theorem_id} registers no violating strategy for {assumption!r}; known: {known}")
    thm = e.theorem

    def only_this_fails(inst: Any) -> bool:
        a = {x.name: x.holds for x in thm.prior_assumptions(thm.validate(inst))}
        if assumption not in a:
            raise ValueError(
                f"{theorem_id} has no prior assumption named {assumption!r}; its assumptions: {', '.join(a)}"
            )
        return not a[assumption] and all(v for k, v in a.items() if k != assumption)

    return _build(e.violations[assumption]).filter(only_this_fails)


def registered(prefix: str = "") -> tuple[str, ...]:
    """Registered ids (optionally those starting with ``prefix``), in registration order."""
    return tuple(k for k in _ENTRIES if k.startswith(prefix))
