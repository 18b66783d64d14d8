"""Short import names (``models``, ``spectral``, ``proofs_check``) as aliases of ``attncond.*``.

When Python resolves the short name ``models`` to attncond's own folder (a checkout on
``sys.path``), that package's ``__init__`` calls :func:`alias_package`, which swaps the
module for ``attncond.models`` and routes every ``models.X`` import to ``attncond.models.X``.
So ``import models.kernels`` and ``import attncond.models.kernels`` give the *same* module
object (no class is defined twice). A user's own ``models`` package is never touched: it
never runs this code, and attncond's internals import only ``attncond.*``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

_ALIASED: set[str] = set()


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # already executed under its real name; the import system overwrote __spec__ with the
        # alias spec, so put the real one back (pickling, reload and inspect read it)
        module.__spec__ = self.real_spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None):
        top = fullname.partition(".")[0]
        if top not in _ALIASED or "." not in fullname:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader("attncond." + fullname))


def alias_package(short: str) -> None:
    """Make ``sys.modules[short]`` the module ``attncond.<short>`` and alias its sub-modules."""
    if short not in _ALIASED:
        _ALIASED.add(short)
        if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _AliasFinder())
    sys.modules[short] = importlib.import_module("attncond." + short)
