"""attncond.proofs_check: what is claimed — sympy derivations, theorem objects,
Hypothesis strategies and gradient-descent dynamics.

``proofs_check.register(theorem, strategy, violations=..., bias=...)`` adds a user's own claim to
the registry that ``attncond check`` runs (with power and vacuity reporting); ``check``, ``search``,
``get_theorem`` and ``THEOREMS`` are the registry's other entry points. They are resolved lazily, so
importing ``proofs_check.dynamics`` or ``proofs_check.strategies`` does not load the theorems.
"""

if __name__ == "proofs_check":  # imported by its short name from a checkout: alias attncond.proofs_check
    from attncond.aliasing import alias_package

    alias_package(__name__)

_LAZY = ("register", "unregister", "check", "search", "get_theorem", "instances", "THEOREMS", "Theorem",
         "Assumption", "Conclusion", "AttentionConfig", "BlockConfig", "replay", "save_counterexample")
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(".theorems", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
