"""attncond.proofs_check: what is claimed — sympy derivations, theorem objects,
Hypothesis strategies and gradient-descent dynamics."""

if __name__ == "proofs_check":  # imported by its short name from a checkout: alias attncond.proofs_check
    from attncond.aliasing import alias_package

    alias_package(__name__)

