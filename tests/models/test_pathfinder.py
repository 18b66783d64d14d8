"""``models.data.pathfinder``: labels checked by an independent flood fill, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from attncond.models.data import pathfinder


@pytest.mark.parametrize("grid,lengths,seed", [(6, (3, 5), 0), (8, (5, 9), 1), (10, (4, 12), 7)])
def test_labels_are_connectivity_by_flood_fill(grid, lengths, seed):
    d = pathfinder(200, seed, grid=grid, path_length=lengths)
    assert d.images.shape == (200, grid, grid) and d.labels.shape == (200,) and d.markers.shape == (200, 2, 2)
    for img, lab, mk in zip(d.images.numpy(), d.labels.tolist(), d.markers.tolist(), strict=True):
        ink = img > 0
        comp, n = ndimage.label(ink)  # 4-connectivity (scipy's default structure)
        assert n == 2  # two paths that never touch, not even diagonally:
        assert ndimage.label(ink, structure=np.ones((3, 3)))[1] == 2
        (r0, c0), (r1, c1) = mk
        assert img[r0, c0] == img[r1, c1] == 2.0 and (img == 2.0).sum() == 2
        assert int(comp[r0, c0] == comp[r1, c1]) == lab
        sizes = sorted(int((comp == k).sum()) for k in (1, 2))
        assert lengths[0] <= sizes[0] and sizes[1] <= lengths[1]
        # each path is a simple curve: its two ends have one ink neighbour, the rest two
        for k in (1, 2):
            cells = np.argwhere(comp == k)
            deg = [sum(0 <= r + a < grid and 0 <= c + b < grid and comp[r + a, c + b] == k
                       for a, b in ((0, 1), (1, 0), (0, -1), (-1, 0))) for r, c in cells]
            assert sorted(deg)[:2] == [1, 1] and all(x == 2 for x in sorted(deg)[2:])
    # both classes occur in fair proportion (label drawn with probability 1/2)
    assert 60 <= int(d.labels.sum()) <= 140


def test_marks_sit_on_path_ends_and_dashes_alternate():
    d = pathfinder(50, 3, grid=8, dash=2)
    vals = set(np.unique(d.images.numpy()).tolist())
    assert vals == {0.0, 0.5, 1.0, 2.0}
    for img, mk in zip(d.images.numpy(), d.markers.tolist(), strict=True):
        comp, _ = ndimage.label(img > 0)
        for r, c in mk:
            nb = sum(0 <= r + a < 8 and 0 <= c + b < 8 and comp[r + a, c + b] == comp[r, c]
                     for a, b in ((0, 1), (1, 0), (0, -1), (-1, 0)))
            assert nb == 1  # an end of its path


def test_deterministic_from_seed_and_dtype():
    a, b = pathfinder(30, 5), pathfinder(30, 5)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, pathfinder(30, 6).images)
    assert a.images.dtype == torch.float32
    assert pathfinder(3, 5, dtype="float64").images.dtype == torch.float64
    assert "Pathfinder(N=30" in repr(a)


@pytest.mark.parametrize("kw,msg", [
    ({"N": 0}, "N must be"), ({"grid": 0}, "grid must be"), ({"path_length": (1, 3)}, "path_length"),
    ({"path_length": (5, 4)}, "path_length"), ({"grid": 4, "path_length": (3, 5)}, "path_length"),
    ({"dash": 0}, "dash must be"),
])
def test_bad_input(kw, msg):
    args = {"N": 4, **kw}
    with pytest.raises(ValueError, match=msg):
        pathfinder(args.pop("N"), 0, **args)
