"""attncond.proofs_check: what is claimed — sympy derivations, theorem objects,
Hypothesis strategies and gradient-descent dynamics."""
