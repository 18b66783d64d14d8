"""Data sets that need no download (MATH.md §6).

* :func:`synthetic_regression`: Gaussian tokens in general position, Gaussian targets.
* :func:`teacher_student`: targets from a random teacher :class:`MultiHeadAttention`.
* :func:`digits_two_step`: the [H24] 2×2 indicator task on scikit-learn's bundled
  8×8 digits, and :func:`patchify` to turn its images into tokens for a small ViT.
* :func:`pathfinder`: a synthetic Pathfinder task (two dashed paths, two marked points,
  label = connected), the offline analogue of [S24] Fig. 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .checks import check_device, check_dtype, check_nonneg_int, check_positive_int
from .init import make_generator


@dataclass(frozen=True)
class Dataset:
    """Inputs ``X`` (N, n, D) and targets ``y``, with a record of how they were made."""

    X: torch.Tensor
    y: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def N(self) -> int:
        return int(self.X.shape[0])

    def __repr__(self) -> str:
        return f"Dataset(X={tuple(self.X.shape)}, y={tuple(self.y.shape)}, {self.X.dtype}, meta={self.meta})"


def synthetic_regression(
    N: int,
    n: int,
    D: int,
    d_out: int = 1,
    seed: int = 0,
    *,
    x_scale: float = 1.0,
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str | None = None,
) -> Dataset:
    """``X_i`` with i.i.d. ``N(0, x_scale²)`` entries (general position almost surely) and
    targets ``y_i ∈ R^{n×d_out}`` i.i.d. ``N(0, 1)``; shapes (N, n, D) and (N, n, d_out)."""
    N, n, D = (check_positive_int(k, v) for k, v in (("N", N), ("n", n), ("D", D)))
    d_out = check_positive_int("d_out", d_out)
    dtype, device = check_dtype(dtype), check_device(device)
    g = make_generator(seed)
    X = torch.randn(N, n, D, generator=g, dtype=torch.float64) * float(x_scale)
    y = torch.randn(N, n, d_out, generator=g, dtype=torch.float64)
    meta = {"kind": "synthetic_regression", "seed": seed, "x_scale": float(x_scale)}
    return Dataset(X.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device), meta)


def teacher_student(
    N: int,
    n: int,
    D: int,
    d: int,
    H: int,
    *,
    kernel: str = "softmax",
    d_out: int = 1,
    noise: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str | None = None,
) -> Dataset:
    """Gaussian ``X`` and targets ``y = MH_teacher(X) + noise·ε`` from a seeded teacher
    (:class:`MultiHeadAttention` with seed ``seed + 10_000``); realisable when noise = 0."""
    from .attention import MultiHeadAttention

    base = synthetic_regression(N, n, D, d_out, seed, dtype=dtype, device=device)
    teacher = MultiHeadAttention(D, d, H, kernel=kernel, d_out=d_out, dtype=dtype,
                                 device=device, seed=seed + 10_000)
    with torch.no_grad():
        y = teacher(base.X)
    if noise:
        g = make_generator(seed + 20_000)
        y = y + float(noise) * torch.randn(y.shape, generator=g, dtype=torch.float64).to(y)
    meta = {"kind": "teacher_student", "seed": seed, "kernel": kernel, "noise": float(noise),
            "teacher": {"D": D, "d": d, "H": H}}
    return Dataset(base.X, y, meta)


@dataclass(frozen=True)
class TwoStepDigits:
    """[H24] two-step indicator task.

    ``images`` (N, 16, 16) in [0, 1]; ``labels`` (N,) the final class;
    ``match`` (N,) 1 where the two indicator digits are equal (the intermediate step);
    ``tiles`` (N, 4) the digit class in each tile, positions 0..3 = TL, TR, BL, BR.
    """

    images: torch.Tensor
    labels: torch.Tensor
    match: torch.Tensor
    tiles: torch.Tensor
    indicator_positions: tuple[int, int]
    target_positions: tuple[int, int]

    def __repr__(self) -> str:
        return (f"TwoStepDigits(N={self.images.shape[0]}, indicators at {self.indicator_positions}, "
                f"targets at {self.target_positions})")


def digits_two_step(
    N: int,
    seed: int = 0,
    *,
    indicator_positions: tuple[int, int] = (2, 3),
    target_positions: tuple[int, int] = (0, 1),
    split: str = "all",
    dtype: torch.dtype | str = torch.float64,
    device: torch.device | str | None = None,
) -> TwoStepDigits:
    """Build the [H24] 2×2 task from ``sklearn.datasets.load_digits`` (shipped, no download).

    Each 16×16 image holds four 8×8 digits. The tiles at ``indicator_positions`` are
    digits drawn from {1, 2}; the other two are any digits. The label is the class of the
    tile at ``target_positions[0]`` if the indicators match, else of ``target_positions[1]``.
    ``split`` = ``"train"`` / ``"test"`` draws tiles from disjoint halves of the 1,797
    source digits (``"all"`` uses every digit).
    """
    N = check_positive_int("N", N)
    check_nonneg_int("seed", seed)
    pos = tuple(indicator_positions) + tuple(target_positions)
    if sorted(pos) != [0, 1, 2, 3]:
        raise ValueError(
            "indicator_positions and target_positions must together be a permutation of "
            f"(0, 1, 2, 3), got {indicator_positions} and {target_positions}"
        )
    if split not in ("all", "train", "test"):
        raise ValueError(f"unknown split {split!r}; known: 'all', 'train', 'test'")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "digits_two_step needs scikit-learn (it ships the 8x8 digits): "
            "pip install 'attncond[data]'"
        ) from exc
    digits = load_digits()
    imgs = digits.images / 16.0
    cls = digits.target
    idx = np.arange(len(cls))
    if split != "all":
        idx = idx[: len(idx) // 2] if split == "train" else idx[len(idx) // 2 :]
    rng = np.random.default_rng(seed)
    by_class = {c: idx[cls[idx] == c] for c in range(10)}
    ind_pool = np.concatenate([by_class[1], by_class[2]])
    tiles_img = np.zeros((N, 4, 8, 8))
    tiles_cls = np.zeros((N, 4), dtype=np.int64)
    for slot in range(4):
        pool = ind_pool if slot in indicator_positions else idx
        pick = rng.choice(pool, size=N)
        tiles_img[:, slot] = imgs[pick]
        tiles_cls[:, slot] = cls[pick]
    a, b = indicator_positions
    match = (tiles_cls[:, a] == tiles_cls[:, b]).astype(np.int64)
    t0, t1 = target_positions
    labels = np.where(match == 1, tiles_cls[:, t0], tiles_cls[:, t1])
    top = np.concatenate([tiles_img[:, 0], tiles_img[:, 1]], axis=2)
    bottom = np.concatenate([tiles_img[:, 2], tiles_img[:, 3]], axis=2)
    images = np.concatenate([top, bottom], axis=1)
    dtype, device = check_dtype(dtype), check_device(device)
    return TwoStepDigits(
        images=torch.as_tensor(images, dtype=dtype, device=device),
        labels=torch.as_tensor(labels, device=device),
        match=torch.as_tensor(match, device=device),
        tiles=torch.as_tensor(tiles_cls, device=device),
        indicator_positions=(int(a), int(b)),
        target_positions=(int(t0), int(t1)),
    )


def patchify(images: torch.Tensor, patch: int = 4) -> torch.Tensor:
    """Split images (N, h, w) into non-overlapping ``patch×patch`` tokens.

    Returns (N, (h/patch)·(w/patch), patch²), patches in row-major order: the token
    sequence a small ViT consumes.
    """
    patch = check_positive_int("patch", patch)
    if not isinstance(images, torch.Tensor) or images.ndim != 3:
        raise ValueError(f"images must be a tensor of shape (N, h, w), got {getattr(images, 'shape', images)}")
    N, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"patch={patch} must divide the image size {h}x{w}")
    x = images.reshape(N, h // patch, patch, w // patch, patch).permute(0, 1, 3, 2, 4)
    return x.reshape(N, (h // patch) * (w // patch), patch * patch)


@dataclass(frozen=True)
class Pathfinder:
    """A synthetic Pathfinder task (offline analogue of [S24] Fig. 1, MATH.md §6).

    ``images`` (N, grid, grid): 0 background, path pixels ``1.0`` (dash) and ``0.5`` (gap
    between dashes: still ink, so the path stays 4-connected), marked points ``2.0``;
    ``labels`` (N,) int64, 1 where the two marked points lie on the same path;
    ``markers`` (N, 2, 2) int64, the (row, column) of the two marked points.
    """

    images: torch.Tensor
    labels: torch.Tensor
    markers: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"Pathfinder(N={self.images.shape[0]}, grid={self.images.shape[-1]}, "
                f"positives={int(self.labels.sum())}, meta={self.meta})")


_STEPS4 = ((0, 1), (1, 0), (0, -1), (-1, 0))


def _rand_int(g: torch.Generator, hi: int) -> int:
    return int(torch.randint(0, hi, (1,), generator=g))


def _walk(g: torch.Generator, grid: int, length: int, blocked: set[tuple[int, int]]
          ) -> list[tuple[int, int]] | None:
    """A self-avoiding 4-connected walk of ``length`` pixels avoiding ``blocked``, or None."""
    free = [(r, c) for r in range(grid) for c in range(grid) if (r, c) not in blocked]
    if not free:
        return None
    path = [free[_rand_int(g, len(free))]]
    seen = set(path)
    while len(path) < length:
        r, c = path[-1]
        nxt = [(r + dr, c + dc) for dr, dc in _STEPS4
               if 0 <= r + dr < grid and 0 <= c + dc < grid and (r + dr, c + dc) not in seen
               and (r + dr, c + dc) not in blocked
               # no other path pixel may touch the new one (keeps the walk a simple curve)
               and sum((r + dr + a, c + dc + b) in seen for a, b in _STEPS4) == 1]
        if not nxt:
            return None
        path.append(nxt[_rand_int(g, len(nxt))])
        seen.add(path[-1])
    return path


def _halo(path: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """The path's pixels and their 8-neighbours (other paths stay outside, so none touch)."""
    return {(r + a, c + b) for r, c in path for a in (-1, 0, 1) for b in (-1, 0, 1)}


def pathfinder(
    N: int,
    seed: int = 0,
    *,
    grid: int = 8,
    path_length: tuple[int, int] = (5, 9),
    dash: int = 2,
    max_tries: int = 200,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str | None = None,
) -> Pathfinder:
    """``N`` Pathfinder images on a ``grid × grid`` board, deterministic from ``seed`` (torch only).

    Every image holds two self-avoiding 4-connected paths of lengths drawn uniformly from
    ``path_length`` (inclusive), drawn as dashes of ``dash`` pixels (intensity 1.0, then
    ``dash`` pixels of 0.5, …). The paths never touch, not even diagonally. Label 1 (drawn
    with probability 1/2): both marked points (value 2.0) are the two ends of the first path;
    label 0: one end of each path is marked. So both classes show two paths and two marks,
    and the label is exactly "the marked points are connected through ink pixels".
    """
    N = check_positive_int("N", N)
    check_nonneg_int("seed", seed)
    grid = check_positive_int("grid", grid)
    dash = check_positive_int("dash", dash)
    max_tries = check_positive_int("max_tries", max_tries)
    lo, hi = (check_positive_int("path_length", v) for v in path_length)
    if not 2 <= lo <= hi or hi > grid * grid // 4:
        raise ValueError(f"path_length must be (lo, hi) with 2 <= lo <= hi <= grid²/4 = {grid * grid // 4}, "
                         f"got {path_length}")
    dtype, device = check_dtype(dtype), check_device(device)
    g = make_generator(seed)
    images = torch.zeros(N, grid, grid, dtype=torch.float64)
    labels = torch.zeros(N, dtype=torch.int64)
    markers = torch.zeros(N, 2, 2, dtype=torch.int64)
    for i in range(N):
        for _ in range(max_tries):
            lens = [lo + _rand_int(g, hi - lo + 1) for _ in range(2)]
            p1 = _walk(g, grid, lens[0], set())
            p2 = _walk(g, grid, lens[1], _halo(p1)) if p1 else None
            if p2:
                break
        else:
            raise ValueError(f"could not place two paths of lengths {path_length} on a {grid}x{grid} grid "
                             f"in {max_tries} tries; use a larger grid or shorter paths")
        for path in (p1, p2):
            for t, (r, c) in enumerate(path):
                images[i, r, c] = 1.0 if (t // dash) % 2 == 0 else 0.5
        label = _rand_int(g, 2)
        if label:
            ends = (p1[0], p1[-1])
        else:
            ends = (p1[0 if _rand_int(g, 2) else -1], p2[0 if _rand_int(g, 2) else -1])
        for k, (r, c) in enumerate(ends):
            images[i, r, c] = 2.0
            markers[i, k] = torch.tensor([r, c])
        labels[i] = label
    meta = {"kind": "pathfinder", "seed": seed, "grid": grid, "path_length": [lo, hi], "dash": dash}
    return Pathfinder(images.to(dtype=dtype, device=device), labels.to(device), markers.to(device), meta)
