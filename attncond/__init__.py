"""attncond: the command-line layer (argument parsing, tables, JSON, plots, sweeps).

The library lives in the top-level packages ``models``, ``spectral`` and ``proofs_check``;
nothing imports this package.
"""

__version__ = "0.1.0"
