"""Guards of the layout (README "Layout and the one-way rule"), by walking every import (AST).

* ``models`` imports neither ``spectral``, ``proofs_check`` nor the CLI;
* ``spectral`` imports neither ``proofs_check`` nor the CLI, and ``spectral.operators`` /
  ``spectral.solvers`` (and the rest of spectral outside ``spectral.diagnostics``) never import
  ``models``;
* ``proofs_check`` does not import the CLI;
* the library imports itself through ``attncond.*`` (or relative imports), never through the
  short names ``models``/``spectral``/``proofs_check`` a user's own package could shadow;
* no name or module starting with ``_`` is imported from another module;
* the import graph of the library (lazy imports included) has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ("models", "spectral", "proofs_check")
SHORT = set(LIB)
#: the namespace root's alias hook; package __init__s call it only when imported by a short name
ALLOWED_PRIVATE = {"attncond.aliasing"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["attncond", *parts] if parts[0] in LIB else parts)


def _library_files() -> list[Path]:
    files = [p for pkg in (*LIB, "attncond") for p in (ROOT / pkg).rglob("*.py")]
    return sorted(p for p in files if "__pycache__" not in p.parts)


def _imports(path: Path, source: str | None = None) -> list[tuple[int, str, list[str], bool]]:
    """``(line, absolute module, imported names, module_level)`` for every import in ``path``
    (or in ``source``, read as if it were that file)."""
    mod = _module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    top_level = {id(n) for n in tree.body}
    guarded = {id(n) for node in tree.body if isinstance(node, ast.If) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        level = id(node) in top_level or id(node) in guarded
        if isinstance(node, ast.Import):
            for a in node.names:
                out.append((node.lineno, a.name, [], level))
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.append((node.lineno, target, [a.name for a in node.names], level))
    return out


def _layer(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] in SHORT:
        return parts[0]
    if parts[0] != "attncond":
        return None
    if len(parts) > 1 and parts[1] in SHORT:
        return parts[1]
    return "cli" if name not in ALLOWED_PRIVATE and name != "attncond" else None


RANK = {"models": 0, "spectral": 1, "proofs_check": 2, "cli": 3}


def _violations(planted: dict[Path, str] | None = None) -> list[str]:
    """Layout violations in the library files, plus ``planted`` ``{path: source}`` (self-test)."""
    bad = []
    sources: dict[Path, str | None] = {p: None for p in _library_files()}
    sources.update(planted or {})
    for path, source in sources.items():
        me = _module_name(path)
        my_layer = _layer(me)
        rel = path.relative_to(ROOT)
        for line, target, names, _ in _imports(path, source):
            where = f"{rel}:{line}: {target}"
            top = target.split(".")[0]
            if top in SHORT:
                bad.append(f"{where} — import attncond.{target} instead of the short name")
            tl = _layer(target)
            if tl is not None and my_layer is not None and RANK[tl] > RANK[my_layer]:
                bad.append(f"{where} — {my_layer} must not import {tl}")
            if (me.startswith("attncond.spectral.") and not me.startswith("attncond.spectral.diagnostics")
                    and tl == "models"):
                bad.append(f"{where} — only spectral.diagnostics may import models")
            if target.startswith("attncond") and target not in ALLOWED_PRIVATE:
                same_module = target == me
                private_mod = any(p.startswith("_") and p != "__init__" for p in target.split("."))
                private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
                my_pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
                if private_mod and not same_module and target.rpartition(".")[0] != my_pkg:
                    bad.append(f"{where} — private module imported from another package")
                if private_names and not same_module:
                    bad.append(f"{where} — private name(s) {private_names} imported across modules")
    return bad


def test_one_way_imports_and_no_private_names():
    bad = _violations()
    assert not bad, "layout violations:\n" + "\n".join(bad)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {}
    names = {_module_name(p) for p in _library_files()}
    for path in _library_files():
        me = _module_name(path)
        deps = set()
        for _, target, imported, _module_level in _imports(path):
            # lazy (function-level) imports count too: they are logical dependencies
            for cand in [f"{target}.{n}" for n in imported] + [target]:
                if cand in names and cand != me:
                    deps.add(cand)
                    break
        graph[me] = deps
    # a package's __init__ re-exporting its children is not a cycle with them
    def is_parent(a: str, b: str) -> bool:
        return b.startswith(a + ".")

    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if is_parent(u, v) or is_parent(v, u):
                continue
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for u in sorted(graph):
        if u not in state:
            visit(u)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("bad_source, expected", [
    ("from attncond.spectral import extreme_singular_values\n", "models must not import spectral"),
    ("from spectral import extreme_singular_values\n", "instead of the short name"),
    ("from attncond.spectral.solvers.gkl import _ritz\n", "private name"),
])
def test_guard_catches_a_planted_violation(bad_source, expected):
    """The guard itself can fail: a bad import planted (in memory) in models/ is reported."""
    planted = {ROOT / "models" / "planted_guard_probe.py": bad_source}
    assert any(expected in v and "planted_guard_probe" in v for v in _violations(planted))
    assert not any("planted_guard_probe" in v for v in _violations())
