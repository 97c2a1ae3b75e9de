"""Which pixels of a grid a polygon covers: the rule shared by extraction and eligibility.

A pixel belongs to a polygon when its centre lies inside it (the GDAL rasterisation rule without
``all_touched``). A polygon smaller than a pixel that contains no pixel centre is represented by the
pixel under its centroid, so every polygon has at least one pixel of evidence.
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine


def polygon_pixels(shape, transform: Affine, height: int, width: int) -> tuple[np.ndarray, bool]:
    """Boolean mask (height, width) of the pixels of ``shape`` on a window with ``transform``.

    Returns the mask and whether the centroid fallback was used.
    """
    rows, cols = np.mgrid[0:height, 0:width]
    x, y = transform @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
    inside = shapely.contains_xy(shape, x, y).reshape(height, width)
    if inside.any():
        return inside, False
    col, row = ~transform @ (shape.centroid.x, shape.centroid.y)
    inside[min(max(int(row), 0), height - 1), min(max(int(col), 0), width - 1)] = True
    return inside, True
