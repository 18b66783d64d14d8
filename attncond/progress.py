"""Progress bars for long work (tqdm), silent when disabled or not installed."""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()  # bars not yet closed (see close_all)


def progress(it: Iterable[T], *, desc: str = "", total: int | None = None,
             disable: bool = False) -> Iterator[T]:
    """Wrap ``it`` in a tqdm bar on stderr that appears only after 1 s of work."""
    if disable:
        return iter(it)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return iter(it)
    bar = tqdm(it, desc=desc, total=total, file=sys.stderr, delay=1.0, leave=False)
    _OPEN.add(bar)
    return iter(bar)


def close_all() -> None:
    """Close (and so erase) every bar still open, e.g. before the CLI prints "interrupted"."""
    for bar in list(_OPEN):
        try:
            bar.close()
        except Exception:  # noqa: BLE001, S110 - best effort while stopping
            pass
    _OPEN.clear()
