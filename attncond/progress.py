"""Progress bars for long work (tqdm), silent when disabled or not installed."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(it: Iterable[T], *, desc: str = "", total: int | None = None,
             disable: bool = False) -> Iterator[T]:
    """Wrap ``it`` in a tqdm bar on stderr that appears only after 1 s of work."""
    if disable:
        return iter(it)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return iter(it)
    return iter(tqdm(it, desc=desc, total=total, file=sys.stderr, delay=1.0, leave=False))
