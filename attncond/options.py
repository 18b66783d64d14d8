"""Argument helpers shared by the subcommands: typed flags, devices and output paths, checked
before any work starts (a wrong value is a one-line usage error, exit status 2)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path

#: Largest accepted size (N, n, D, d, H, steps, …): a C ``int``. Larger values are refused with the
#: key's name instead of overflowing inside torch.
MAX_SIZE = 2**31 - 1
#: Largest accepted seed: seeds are offset (``seed + 10_000`` …) and must stay below torch's 2**64 limit.
MAX_SEED = 2**63 - 1

_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")


class UsageError(ValueError):
    """A command-line value is wrong; the CLI prints the message on one line and exits with 2."""


def split_names(s: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``."""
    return [x.strip() for x in s.split(",") if x.strip()]


def check_int(name: str, v: object, lo: int, hi: int) -> int:
    """``v`` as an int in ``[lo, hi]``, or a :class:`ValueError` naming ``name``."""
    what = "a positive integer" if lo == 1 else "a non-negative integer" if lo == 0 else f"an integer >= {lo}"
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be {what}, got {v!r}")
    if v > hi:
        raise ValueError(f"{name} must be {what} <= {hi}, got {v!r}")
    return v


def int_arg(lo: int = 1, hi: int = MAX_SIZE) -> Callable[[str], int]:
    """An argparse ``type=`` for integers in ``[lo, hi]`` (the message names the range)."""
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {s!r}") from None
        try:
            return check_int("it", v, lo, hi)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("it ")) from None
    parse.__name__ = "integer"
    return parse


def check_device(device: object, name: str = "--device") -> str:
    """``device`` if it names a device this torch build can use, else a :class:`UsageError`.

    ``cpu`` always works; ``cuda``/``cuda:k`` need a CUDA build of torch and a visible device ``k``;
    ``mps`` needs the Apple backend.
    """
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise UsageError(f"{name}: must be 'cpu', 'cuda', 'cuda:<k>' or 'mps', got {device!r}")
    if device == "cpu":
        return device
    import torch

    if device.startswith("cuda"):
        if torch.version.cuda is None:
            raise UsageError(f"{name} {device}: this torch build has no CUDA support "
                             f"(torch {torch.__version__}); use --device cpu or install a CUDA build")
        count = torch.cuda.device_count()
        k = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available() or k >= count:
            raise UsageError(f"{name} {device}: no such CUDA device ({count} visible)")
    elif not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"{name} mps: the MPS backend is not available on this machine")
    return device


def _writable_parent(p: Path, name: str) -> None:
    parent = p.parent if str(p.parent) else Path(".")
    anc = parent
    while not anc.exists():  # run_sweep creates missing folders; the first existing one must be writable
        anc = anc.parent
    if not anc.is_dir():
        raise UsageError(f"{name} {p}: {anc} is not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise UsageError(f"{name} {p}: the folder {anc} is not writable")


def check_output_file(path: object, name: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """``path`` as a :class:`Path` to a file that can be (over)written, checked before any work.

    Refused: an existing folder (nothing is written beside it), a path below a file, a folder that
    is not writable, an existing file that is not writable, and (with ``suffixes``) another suffix.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise UsageError(f"{name}: must be a file name, got {path!r}")
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{name} {p}: is an existing folder; give a file name such as "
                         f"{p / ('out' + (suffixes[0] if suffixes else ''))}")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise UsageError(f"{name} {p}: the file name must end in one of {', '.join(suffixes)}")
    _writable_parent(p, name)
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{name} {p}: the file exists and is not writable")
    return p


def check_output_folder(path: object, name: str) -> Path:
    """``path`` as a :class:`Path` to a folder that exists or can be created, checked before any work.

    Refused: an existing file, a path below a file, and a first existing ancestor that is not a
    writable folder. Nothing is created here (the command creates the folder when it writes).
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise UsageError(f"{name}: must be a folder name, got {path!r}")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{name} {p}: exists and is not a folder")
    _writable_parent(p / "x", name)
    return p


def check_plot_path(path: object, name: str = "--plot") -> Path:
    """:func:`check_output_file` for a matplotlib figure: the suffix picks the format (png, pdf, svg …).

    Missing folders below a writable one are accepted and created only when the figure is written,
    after the work (:func:`attncond.report.save_figure`), so an interrupted run leaves nothing behind.
    """
    from .report import pyplot

    pyplot()  # --plot needs matplotlib: say so before the work, not after it
    from matplotlib.backend_bases import FigureCanvasBase

    formats = tuple(sorted("." + k for k in FigureCanvasBase.get_supported_filetypes()))
    preferred = (".png",) + tuple(f for f in formats if f != ".png")
    return check_output_file(path, name, preferred)


def add_model_size(p: argparse.ArgumentParser, N: int = 8, n: int = 4, D: int = 8, d: int = 4,
                   H: int = 4) -> None:
    """The model-size, seed, dtype and device flags every model-building command takes."""
    p.add_argument("--N", type=int_arg(), default=N, help=f"samples (default {N})")
    p.add_argument("--n", type=int_arg(), default=n, help=f"tokens per sample (default {n})")
    p.add_argument("--D", type=int_arg(), default=D, help=f"embedding dimension (default {D})")
    p.add_argument("--d", type=int_arg(), default=d, help=f"head width (default {d})")
    p.add_argument("--H", type=int_arg(), default=H, help=f"heads (default {H})")
    p.add_argument("--seed", type=int_arg(0, MAX_SEED), default=0)
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
