"""attncond: conditioning diagnostics for gradient descent on softmax attention.

The library lives in three sub-packages, imported one way only::

    attncond.models  <-  attncond.spectral  <-  attncond.proofs_check  <-  attncond (CLI)

In a checkout the sub-packages are the top-level folders ``models/``, ``spectral/`` and
``proofs_check/`` beside this package; they are reached as ``attncond.models`` and so on, so
that a user's own ``models/`` or ``spectral/`` package on ``sys.path`` never shadows them.
The short names (``import spectral``) still work from a checkout, as aliases of the same
module objects (see :mod:`attncond.aliasing`). Nothing below the CLI imports this package's
command modules.
"""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

#: The library sub-packages; in a checkout they are folders beside this package.
SUBPACKAGES = ("models", "spectral", "proofs_check")

_here = _os.path.dirname(_os.path.abspath(__file__))
_root = _os.path.dirname(_here)
if all(_os.path.isfile(_os.path.join(_root, p, "__init__.py")) for p in SUBPACKAGES) and _os.path.isfile(
    _os.path.join(_root, "pyproject.toml")
):
    # a checkout (or an editable install of one): attncond.models -> <root>/models, etc.
    __path__.append(_root)  # noqa: F821 - the package's own search path
