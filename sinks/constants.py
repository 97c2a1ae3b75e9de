"""Names and limits the ``sinks`` command shows before it does any work.

The command-line parser lists these in its choices and help text, so they live here, in a module
that imports nothing: ``sinks --help`` and the parsing of a command line must not pay for numpy,
pandas or scipy. The library modules that use them import them from here (one source of truth)
and keep their own names for them.
"""

from __future__ import annotations

#: Height-diameter models fitted on a height sample (:data:`sinks.pools.height.FITTED_METHODS`).
HEIGHT_MODELS = ("log1", "log2", "michaelis", "weibull")

#: Depth harmonisation methods of soil stocks (:data:`sinks.pools.depth.METHODS`).
DEPTH_METHODS = ("spline", "overlap")

#: Where the tiles of a map job run (:data:`sinks.mapping.executors.EXECUTORS`).
EXECUTORS = ("serial", "threads", "processes", "dask")

#: Largest grid (pixels) a stack or a map computes unless told otherwise (``max_pixels``, CLI
#: ``--max-pixels``; :data:`sinks.covariates.spec.MAX_PIXELS`): 10^9 pixels is a 31,623 x 31,623
#: grid, e.g. Chongqing (82,400 km2) at 10 m or Sichuan (486,000 km2) at 30 m; one float32 band of
#: it is 3.7 GiB uncompressed, and at the measured ~1 us per pixel and feature a 4-feature stack
#: takes over an hour. Larger grids are nearly always a resolution in the wrong units or an extent
#: in the wrong CRS. Checked by :func:`sinks.covariates.local.check_grid_size` once the grid is known.
MAX_PIXELS = 1_000_000_000

#: Nodata values rasters commonly carry (GDAL's -9999, int16's -32768, float32's lowest value): a
#: value exactly equal to one, in a raster that declares no nodata, is almost surely a nodata pixel
#: (:func:`sinks.learn.targets.feature_matrix`, :meth:`sinks.covariates.local.LocalEngine.read_source`).
NODATA_LIKE = (-9999.0, -32768.0, -3.4028234663852886e38)
#: A covariate stack pixel holding exactly 0 in every continuous band (categorical ones left out:
#: class 0 is a real class), with this many such bands or more, is a fill
#: value where there is no data (0 is the commonest undeclared nodata of reflectance products), not
#: a place: no landscape has zero reflectance, elevation, slope and index at once
#: (:class:`sinks.mapping.tiles.StackReader`). A heuristic.
ALL_ZERO_MIN_BANDS = 3

#: Environment variable the ``sinks`` command sets (not under ``--debug``) so that every process that
#: writes rasters, worker processes included, turns libtiff's own printing off when it imports
#: :mod:`sinks.cog` (:func:`sinks.cog.quiet_libtiff`).
QUIET_LIBTIFF_ENV = "SINKS_QUIET_LIBTIFF"
