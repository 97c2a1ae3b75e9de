"""A simulated "demo county" with known truth, generated deterministically (no download).

SIMULATED DATA. Everything here is made up by a seeded random generator so that the whole sinks
chain can be run, and checked against a known answer, on any machine in a minute. The settings
below (shapes of the fields, reflectance curves, height-diameter curves, species mix by elevation)
are simulation settings chosen to look plausible for a hilly subtropical county of the Sichuan
basin; they are not published parameters and must not be used as such. Carbon in the inventory
plots is computed from the simulated trees with the same cited allometry sinks uses for real data.

The world (EPSG:32648, UTM 48N; 30 m pixels) has:

- ``dem.tif``: elevation (m), hills cut by a river valley;
- ``surface_reflectance.tif``: red, NIR and SWIR1 reflectance (uint16, scale 1e-4, nodata 0) that
  respond to carbon density and saturate in dense forest, with sensor noise, terrain illumination
  and one cloud (nodata);
- ``forest_history.tif``: forest (1) / non-forest (0) for every year 2000-2025, one band per year
  (band descriptions are the years), with patches cleared in 2023 and plantations from 2012;
- ``wetland.tif``: the river corridor (1) / dry land (0);
- ``carbon_truth.tif``: the hidden tree carbon density (Mg C/ha, above + below ground) in 2025;
- ``plots.gpkg`` + ``trees.csv``: 1-mu (0.0667 ha) inventory plots with tree lists (species,
  dbh_cm, height_m), clustered around villages and absent from the remote north-west upland,
  whose broadleaf canopy reflects unlike any plot's (a region unlike any plot); each plot's carbon is its pixel's hidden truth times a
  measurement noise whose level (``noise_level``: low or high, one per crew and cluster) and
  known sd (``measurement_sd_mg_ha``) are in the table (:func:`measure_plots`);
  :func:`simulate_test_plots` draws independent test plots measured the same way;
- ``surface_reflectance_2020.tif`` + ``carbon_truth_2020.tif``: the first crediting epoch (2020),
  before the project planting and before five years of a regional trend (forest growth, natural
  regrowth of open land) that no project causes;
- ``project_parcels.gpkg`` + ``project_truth.csv``: an afforestation project started in 2020:
  planted parcels with a known carbon gain by 2025, placebo parcels on like land without any
  planting, a planting smaller than one pixel, one half off the county's edge and one placed on
  purpose in the remote upland, outside the model's area of applicability (``outside_aoa_01``,
  :func:`_outside_aoa_parcel`); the truth holds each parcel's true gain from the planting and from
  the trend (t CO2e), and the credit status a parcel must get by construction (``expected_status``);
- ``parcels.gpkg``: candidate afforestation parcels (``parcel_id``, ``start_date``) and
  ``parcels_truth.csv`` with the verdict each must get and why (not read by the rule engine).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from rasterio.features import geometry_mask
from scipy.ndimage import gaussian_filter
from shapely import affinity
from shapely.geometry import Point, box

from sinks.errors import InputError
from sinks.pools import forest

CRS = "EPSG:32648"
PIXEL_M = 30.0
ORIGIN = (400_000.0, 3_310_000.0)  # west / north edge, near 29.9 N 104 E
YEARS = tuple(range(2000, 2026))
CLEARED_YEAR, PLANTED_YEAR = 2023, 2012
START_DATE = "2025-01-01"
MIN_SIZE = 150  # pixels per side: room for every kind of parcel
PLOT_AREA_HA = 1 / 15  # one mu, the area of China's national forest inventory sample plots
#: plot sampling (simulation settings): clusters of plots around villages, none in the remote upland
CLUSTERS, PLOTS_PER_CLUSTER, CLUSTER_RADIUS_PX = 150, 4, 8
#: the remote upland (simulation settings): a disc (centre and radius as fractions of the side) whose
#: forest is broadleaf, with a brighter NIR and SWIR than the conifers the plots measure
REMOTE_CENTRE, REMOTE_RADIUS = (0.15, 0.15), 0.14
REMOTE_NIR_GAIN, REMOTE_SWIR_SHIFT = 1.3, 0.04
#: crediting epochs (simulation settings): project parcels planted on open land at the start of the
#: first epoch gain PLANTING_GAIN_MG_HA by the second (a 5-year-old plantation, times a pixel-scale
#: lognormal factor of sd PLANTING_GAIN_SD_LOG); a regional trend no project causes: every forest
#: pixel gains TREND_FOREST_MG_HA_YR, and patches of dry open land (about 60 %: a smooth field above
#: REGROWTH_QUANTILE_Z) regrow TREND_OPEN_MG_HA_YR (lognormal sd 0.3) while the rest stays bare
EPOCHS = (2020, 2025)
PROJECT_START = "2020-01-01"
PLANTING_GAIN_MG_HA, PLANTING_GAIN_SD_LOG = 15.0, 0.15
TREND_FOREST_MG_HA_YR, TREND_OPEN_MG_HA_YR = 1.0, 0.6
REGROWTH_QUANTILE_Z = -0.25
PROJECT_PARCELS = {"planted": 8, "placebo": 8}
#: the project parcel placed on purpose where the model does not apply (simulation settings): a square of
#: OUTSIDE_AOA_SIDE_M sides (scaled like the other parcels in a county under 400 pixels) at the remote
#: upland's centre, on a meadow open in every year, planted with the upland's broadleaf
OUTSIDE_AOA_SIDE_M = 210.0
#: the credit status a project parcel must get by construction, by kind (the others' depend on the maps)
EXPECTED_STATUS = {"outside_aoa": "needs_field_measurement", "edge": "undetermined"}
#: monitoring plots the project measures in each planted parcel in the second epoch
MONITORING_PLOTS = 3
#: plot measurement noise (simulation settings): log-scale sd of a plot's carbon around its pixel's
#: truth, by crew; multiplicative, so the noise also grows with the stock (heteroscedastic)
NOISE_SD_LOG = {"low": 0.08, "high": 0.25}
#: species by elevation band (simulation settings): (name, Chinese name, share in the band)
SPECIES = {
    "low": [("Eucalyptus grandis", "桉树", 0.3), ("Pinus massoniana", "马尾松", 0.4), ("Cupressus funebris", "柏木", 0.3)],
    "mid": [("Cunninghamia lanceolata", "杉木", 0.5), ("Pinus massoniana", "马尾松", 0.3), ("Cupressus funebris", "柏木", 0.2)],
    "high": [("Quercus variabilis", "栎类", 0.6), ("Cunninghamia lanceolata", "杉木", 0.4)],
}
#: height-diameter curves H = 1.3 + hmax (1 - exp(-b D)) (simulation settings)
HD_CURVES = {
    "Eucalyptus grandis": (30.0, 0.06), "Pinus massoniana": (24.0, 0.045), "Cupressus funebris": (20.0, 0.05),
    "Cunninghamia lanceolata": (25.0, 0.05), "Quercus variabilis": (22.0, 0.04),
}


@dataclass(frozen=True)
class DemoWorld:
    folder: Path
    dem: Path
    reflectance: Path
    forest_history: Path
    wetland: Path
    carbon_truth: Path
    plots: Path
    trees: Path
    parcels: Path
    parcels_truth: Path
    reflectance_2020: Path
    carbon_truth_2020: Path
    project_parcels: Path
    project_truth: Path


def world_files(folder: str | Path) -> DemoWorld:
    """The paths of the demo county's files in ``folder`` (as :func:`make_world` writes them)."""
    folder = Path(folder)
    return DemoWorld(folder, folder / "dem.tif", folder / "surface_reflectance.tif", folder / "forest_history.tif",
                     folder / "wetland.tif", folder / "carbon_truth.tif", folder / "plots.gpkg", folder / "trees.csv",
                     folder / "parcels.gpkg", folder / "parcels_truth.csv", folder / "surface_reflectance_2020.tif",
                     folder / "carbon_truth_2020.tif", folder / "project_parcels.gpkg", folder / "project_truth.csv")


def _field(rng, shape, sigma):
    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (f - f.mean()) / f.std()


def _blobs(rng, allowed: np.ndarray, n: int, radius: tuple[int, int]) -> np.ndarray:
    """``n`` round patches centred on allowed pixels."""
    rows, cols = np.indices(allowed.shape)
    out = np.zeros(allowed.shape, bool)
    candidates = np.argwhere(allowed)
    for r, c in candidates[rng.choice(len(candidates), size=n, replace=False)]:
        out |= (rows - r) ** 2 + (cols - c) ** 2 <= rng.integers(*radius) ** 2
    return out


def _reflectance(rng, carbon, broadleaf, water, illumination) -> np.ndarray:
    """Red, NIR, SWIR1 (uint16, x 1e4) of a carbon field: closure saturates, SWIR keeps some signal.

    ``broadleaf`` pixels (the remote upland's forest) reflect brighter in NIR and SWIR than the
    conifers the plots measure. Sensor noise is drawn from ``rng``.
    """
    shape = carbon.shape
    closure, deep = 1 - np.exp(-carbon / 40), 1 - np.exp(-carbon / 90)
    red = (0.10 - 0.07 * closure + 0.006 * rng.standard_normal(shape)) * illumination
    nir = (0.18 + 0.17 * closure + 0.012 * rng.standard_normal(shape)) * illumination
    swir = (0.24 - 0.13 * deep + 0.008 * rng.standard_normal(shape)) * illumination
    nir[broadleaf] *= REMOTE_NIR_GAIN
    swir[broadleaf] += REMOTE_SWIR_SHIFT * closure[broadleaf]
    red[water], nir[water], swir[water] = 0.04, 0.03, 0.01
    return np.clip(np.round(np.stack([red, nir, swir]) * 10_000), 1, 65_535).astype(np.uint16)


def _rasterize(shapes, transform, shape) -> np.ndarray:
    """Pixels any of ``shapes`` touches."""
    if not shapes:
        return np.zeros(shape, bool)
    return ~geometry_mask(shapes, out_shape=shape, transform=transform, all_touched=True)


def _neighbours_of(mask: np.ndarray) -> np.ndarray:
    """Interior pixels with a 4-neighbour in ``mask``."""
    grown = np.zeros_like(mask)
    grown[1:-1, 1:-1] = mask[:-2, 1:-1] | mask[2:, 1:-1] | mask[1:-1, :-2] | mask[1:-1, 2:]
    return grown


def _pixel_shares(shape, transform, mask: np.ndarray):
    """(window of the pixels ``mask`` holds, exact share of each of its pixels inside ``shape``)."""
    from sinks.pixels import coverage_fractions

    rows, cols = np.nonzero(mask)
    window = (rows.min(), cols.min(), rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    return window, coverage_fractions(shape, transform, window)[0]


def _place_projects(rng, transform, allowed) -> tuple[list[dict], np.ndarray]:
    """Planted and placebo project parcels on ``allowed`` land; the planting's carbon gain (Mg C/ha).

    Each parcel is a rotated rectangle of 150-300 m sides whose touched pixels are all ``allowed``
    and touch no other parcel. A planted parcel's gain is PLANTING_GAIN_MG_HA times a pixel-scale
    lognormal factor, times the exact share of each pixel inside the parcel (the planting stops at
    its boundary), so the parcel's true gain is the sum of the gain over its pixels times 0.09 ha.
    """
    size = allowed.shape[0]
    taken = np.zeros(allowed.shape, bool)
    factor = np.exp(PLANTING_GAIN_SD_LOG * rng.standard_normal(allowed.shape) - PLANTING_GAIN_SD_LOG ** 2 / 2)
    gain = np.zeros(allowed.shape)
    projects = []
    blocked = taken.copy()  # parcels' pixels and their 4-neighbours: no two parcels touch
    for kind, count in PROJECT_PARCELS.items():
        made = 0
        for _ in range(5000):
            if made == count:
                break
            cx, cy = transform @ (rng.uniform(15, size - 15), rng.uniform(15, size - 15))
            width, height = rng.uniform(150, 300) * min(1.0, size / 400), rng.uniform(150, 300) * min(1.0, size / 400)
            shape = affinity.rotate(box(cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2),
                                    rng.uniform(0, 90))
            mask = _rasterize([shape], transform, allowed.shape)
            if not mask.any() or blocked[mask].any() or not allowed[mask].all():
                continue
            taken |= mask
            blocked = taken | _neighbours_of(taken)
            made += 1
            window, fraction = _pixel_shares(shape, transform, mask)
            r0, c0, h, w = window
            if kind == "planted":
                gain[r0:r0 + h, c0:c0 + w] += PLANTING_GAIN_MG_HA * factor[r0:r0 + h, c0:c0 + w] * fraction
            projects.append({"parcel_id": f"{kind}_{made:02d}", "kind": kind, "geometry": shape, "window": window,
                             "fraction": fraction})
        if made < count:
            raise RuntimeError(f"demo world: could only place {made} of {count} '{kind}' project parcels")
    return projects, gain


def _outside_aoa_parcel(rng, transform, remote: np.ndarray, avoid: np.ndarray) -> tuple[dict, np.ndarray]:
    """``outside_aoa_01``: a planted parcel placed on purpose where the model does not apply.

    A square of OUTSIDE_AOA_SIDE_M sides (scaled like the other parcels), rotated at random, centred
    on a random pixel of the remote upland far enough from its rim that the parcel and its
    4-neighbours lie inside it, and from the ``avoid`` pixels (land with a forest history there: the
    clearings and plantations) that they touch none. Its land is a meadow, the parcel's pixels and
    their 4-neighbours, open in every year, so the parcel is eligible like the other planted
    parcels. The project plants the upland's broadleaf there: PLANTING_GAIN_MG_HA times a pixel-scale
    lognormal factor times each pixel's share, as in :func:`_place_projects`, but no inventory or
    monitoring plot samples it, and by 2025 its canopy reflects like the upland's broadleaf, unlike
    any plot: the AOA excludes it, and crediting must say it needs field measurement
    (:data:`EXPECTED_STATUS`).
    Returns (the parcel, with its gain in Mg C/ha over its window under ``"gain"``; the meadow).
    """
    from scipy.ndimage import distance_transform_edt

    size = remote.shape[0]
    side = OUTSIDE_AOA_SIDE_M * min(1.0, size / 400)
    reach = side / PIXEL_M / np.sqrt(2) + 2  # pixels from its centre the parcel and its neighbours touch
    rows, cols = np.indices(remote.shape)
    inner = np.hypot(rows - REMOTE_CENTRE[0] * size, cols - REMOTE_CENTRE[1] * size) <= REMOTE_RADIUS * size - reach
    clear = distance_transform_edt(~avoid) > reach if avoid.any() else np.ones(remote.shape, bool)
    candidates = np.argwhere(inner & clear)
    if not len(candidates):
        raise RuntimeError("demo world: no room in the remote upland for the outside-AOA project parcel")
    r, c = candidates[rng.integers(len(candidates))]
    cx, cy = transform @ (c + 0.5, r + 0.5)
    shape = affinity.rotate(box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), rng.uniform(0, 90))
    mask = _rasterize([shape], transform, remote.shape)
    meadow = mask | _neighbours_of(mask)
    if not remote[meadow].all() or avoid[meadow].any():
        raise RuntimeError("demo world: the outside-AOA project parcel does not fit in the remote upland")
    window, fraction = _pixel_shares(shape, transform, mask)
    factor = np.exp(PLANTING_GAIN_SD_LOG * rng.standard_normal(fraction.shape) - PLANTING_GAIN_SD_LOG ** 2 / 2)
    return {"parcel_id": "outside_aoa_01", "kind": "outside_aoa", "geometry": shape, "window": window,
            "fraction": fraction, "gain": PLANTING_GAIN_MG_HA * factor * fraction}, meadow


def _edge_cases(rng, transform, allowed, projects, gain) -> list[dict]:
    """Two planted parcels a map handles at its limits (their gain added to ``gain`` in place).

    ``subpixel_01``: a 25 m x 25 m planting (0.0625 ha, above CCER's 400 m2 but smaller than one
    30 m pixel), inside one allowed pixel; ``edge_01``: a 120 m x 90 m planting that runs half off
    the county's east edge, so half of it has no raster (maps and eligibility layers alike).
    """
    size = allowed.shape[0]
    taken = _rasterize([p["geometry"] for p in projects], transform, allowed.shape)
    free = allowed.copy()
    free[1:-1, 1:-1] &= ~(taken | _neighbours_of(taken))[1:-1, 1:-1]
    out = []
    rows = np.flatnonzero(free[:, -4:].all(axis=1) & free[:, -8:-4].all(axis=1))
    rows = rows[(rows > 10) & (rows < size - 10)]
    candidates = np.argwhere(free[15:-15, 15:-15]) + 15
    if not len(rows) or not len(candidates):
        raise RuntimeError("demo world: no room for the edge-case project parcels")
    r = int(rows[rng.integers(len(rows))])
    x_edge, y = transform @ (size, r + 0.5)
    rc, cc = candidates[rng.integers(len(candidates))]
    cx, cy = transform @ (cc + 0.5, rc + 0.5)
    shapes = {"subpixel_01": box(cx - 12.5, cy - 12.5, cx + 12.5, cy + 12.5),
              "edge_01": box(x_edge - 60, y - 45, x_edge + 60, y + 45)}
    for pid, shape in shapes.items():
        window, fraction = _pixel_shares(shape, transform, _rasterize([shape], transform, allowed.shape))
        r0, c0, h, w = window
        gain[r0:r0 + h, c0:c0 + w] += PLANTING_GAIN_MG_HA * fraction
        out.append({"parcel_id": pid, "kind": pid.split("_")[0], "geometry": shape, "window": window,
                    "fraction": fraction})
    return out


def _write_projects(w: DemoWorld, projects, transform, gain, regrowth, dry_open) -> None:
    """``project_parcels.gpkg`` (parcel_id, start_date, polygon) and ``project_truth.csv``.

    The truth per parcel, in t CO2e over the two epochs: ``true_gain_tco2e`` is what the planting
    added (0 for a placebo parcel), ``trend_tco2e`` what the regional regrowth added anyway, both
    summed over the parcel's exact pixel shares x 0.09 ha x 44/12; ``expected_status``: the credit
    status the parcel must get by construction (:data:`EXPECTED_STATUS`; empty where it depends on
    the maps).
    """
    pixel_ha = PIXEL_M * PIXEL_M / 10_000
    rows = []
    for p in projects:
        r0, c0, h, wd = p["window"]
        f = p["fraction"]
        # the gain already holds each pixel's planted share; parcels share no pixel, so the pixels
        # this parcel covers hold its gain only (its bounding box may reach into another's)
        area_gain = np.where(f > 0, gain[r0:r0 + h, c0:c0 + wd], 0.0) if p["kind"] != "placebo" else np.zeros_like(f)
        trend = np.where(dry_open[r0:r0 + h, c0:c0 + wd], regrowth[r0:r0 + h, c0:c0 + wd], 0.0) * f
        rows.append({"parcel_id": p["parcel_id"], "kind": p["kind"], "area_ha": p["geometry"].area / 10_000,
                     "true_gain_tco2e": float(area_gain.sum() * pixel_ha * 44 / 12),
                     "trend_tco2e": float(trend.sum() * pixel_ha * 44 / 12),
                     "expected_status": EXPECTED_STATUS.get(p["kind"], "")})
    gpd.GeoDataFrame([{"parcel_id": p["parcel_id"], "start_date": PROJECT_START, "geometry": p["geometry"]}
                      for p in projects], crs=CRS).to_file(w.project_parcels, driver="GPKG", layer="parcels")
    pd.DataFrame(rows).to_csv(w.project_truth, index=False)


def _write(path: Path, data: np.ndarray, transform, *, dtype, nodata=None, names=None, tags=None):
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=dtype, crs=CRS, transform=transform, nodata=nodata, tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as dst:
        dst.write(data.astype(dtype))
        for i, name in enumerate(names or [], start=1):
            dst.set_band_description(i, name)
        dst.update_tags(simulated="yes: sinks demo county, not real data", **(tags or {}))


def make_world(folder: str | Path, *, size: int = 400, seed: int = 2025) -> DemoWorld:
    """Generate the demo county in ``folder`` (created); the same seed gives the same files."""
    if size < MIN_SIZE:
        raise InputError(f"the demo county needs at least {MIN_SIZE} pixels per side (got {size})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size, size)
    transform = Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M, ORIGIN[1])
    rows, cols = np.indices(shape)

    # terrain: hills rising to the north, cut by a meandering river valley
    river_row = size / 2 + 0.1 * size * np.sin(2 * np.pi * cols / size * 1.5)
    river_dist = np.abs(rows - river_row)
    elevation = (520 + 180 * _field(rng, shape, 40) + 60 * _field(rng, shape, 10) + 300 * (1 - rows / size)
                 - 160 * np.exp(-((river_dist / 30) ** 2)))
    wetland = river_dist < 5
    gy, gx = np.gradient(elevation, PIXEL_M)
    slope_deg = np.degrees(np.arctan(np.hypot(gx, gy)))

    # land cover history: stable forest on hills, clearings in 2023, plantations since 2012
    suitability = 0.9 * (elevation - elevation.mean()) / elevation.std() + 0.05 * slope_deg + _field(rng, shape, 20)
    base_forest = (suitability > np.quantile(suitability, 0.5)) & ~wetland
    cleared = _blobs(rng, base_forest & (river_dist > 40), 6, (10, 16)) & base_forest
    planted = _blobs(rng, ~base_forest & (river_dist > 25), 5, (8, 13)) & ~base_forest & ~wetland
    # the remote upland, and the meadow in it of the parcel placed outside the AOA (its own stream)
    remote = (rows - REMOTE_CENTRE[0] * size) ** 2 + (cols - REMOTE_CENTRE[1] * size) ** 2 <= (REMOTE_RADIUS * size) ** 2
    outside_aoa, meadow = _outside_aoa_parcel(np.random.default_rng([seed, 4]), transform, remote, cleared | planted)
    base_forest = base_forest & ~meadow
    history = np.stack([(base_forest & ~(cleared & (y >= CLEARED_YEAR))) | (planted & (y >= PLANTED_YEAR))
                        for y in YEARS]).astype(np.uint8)
    forest_now = history[-1].astype(bool)

    # hidden carbon density (Mg C/ha): saturating with stand development; young plantations low
    development = np.clip(1.1 + 0.55 * _field(rng, shape, 15) + 0.35 * (elevation - elevation.mean()) / elevation.std(), 0.15, 3.5)
    stand = np.where(planted, 12 + 10 * np.clip(development, 0, 2), 170 * (1 - np.exp(-development)))
    stand = stand * np.exp(0.12 * rng.standard_normal(shape))  # pixel-scale variation no sensor explains

    # the crediting epochs (their own random stream): project parcels, regional trend, first epoch
    rng_epochs = np.random.default_rng([seed, 2])
    span = EPOCHS[1] - EPOCHS[0]
    water = river_dist < 2.5
    ever_forest = history.max(axis=0).astype(bool)
    allowed = ~ever_forest & ~wetland & ~remote & (river_dist > 10)
    projects, gain = _place_projects(rng_epochs, transform, allowed)
    r0, c0, h, wd = outside_aoa["window"]
    gain[r0:r0 + h, c0:c0 + wd] += outside_aoa.pop("gain")
    projects.append(outside_aoa)
    projects += _edge_cases(np.random.default_rng([seed, 3]), transform, allowed, projects, gain)
    dry_open = ~forest_now & ~wetland & ~water
    regrowing = _field(rng_epochs, shape, 6) > REGROWTH_QUANTILE_Z  # grazing stopped here; bare elsewhere
    regrowth = np.where(regrowing, TREND_OPEN_MG_HA_YR * span * np.exp(0.3 * rng_epochs.standard_normal(shape) - 0.045), 0.0)
    carbon = (np.where(forest_now, stand, 0.0) + np.where(dry_open, regrowth, 0.0) + gain).astype(np.float32)
    forest_start = history[YEARS.index(EPOCHS[0])].astype(bool)
    carbon_start = np.where(forest_start, np.maximum(stand - TREND_FOREST_MG_HA_YR * span, 0.5 * stand),
                            0.0).astype(np.float32)

    # reflectance: canopy closure saturates; SWIR keeps some signal at high biomass
    aspect = np.arctan2(-gx, gy)
    illumination = 0.9 + 0.1 * np.cos(np.radians(slope_deg)) + 0.08 * np.sin(np.radians(slope_deg)) * np.cos(aspect - np.radians(135))
    # the upland's forest is broadleaf, and so is the project's planting there (outside_aoa_01)
    reflectance = _reflectance(rng, carbon, remote & (forest_now | (gain > 0)), water, illumination)
    cloud = (rows - 0.25 * size) ** 2 + (cols - 0.8 * size) ** 2 <= (0.045 * size) ** 2
    reflectance[:, cloud] = 0
    reflectance_start = _reflectance(rng_epochs, carbon_start, remote & forest_start, water, illumination)

    w = world_files(folder)
    _write(w.dem, elevation.astype(np.float32), transform, dtype="float32", nodata=-9999.0, names=["elevation"],
           tags={"units": "m"})
    _write(w.reflectance, reflectance, transform, dtype="uint16", nodata=0, names=["red", "nir", "swir1"],
           tags={"scale_factor": "0.0001", "units": "reflectance x 10000"})
    _write(w.forest_history, history, transform, dtype="uint8", nodata=255, names=[str(y) for y in YEARS],
           tags={"values": "1 forest, 0 non-forest, 255 unknown"})
    _write(w.wetland, wetland.astype(np.uint8), transform, dtype="uint8", nodata=255, names=["wetland"],
           tags={"values": "1 wetland, 0 dry land"})
    _write(w.carbon_truth, carbon, transform, dtype="float32", names=["carbon"],
           tags={"units": "Mg C/ha", "content": "hidden truth of the simulation", "year": str(EPOCHS[1])})
    _write(w.reflectance_2020, reflectance_start, transform, dtype="uint16", nodata=0, names=["red", "nir", "swir1"],
           tags={"scale_factor": "0.0001", "units": "reflectance x 10000", "year": str(EPOCHS[0])})
    _write(w.carbon_truth_2020, carbon_start, transform, dtype="float32", names=["carbon"],
           tags={"units": "Mg C/ha", "content": "hidden truth of the simulation", "year": str(EPOCHS[0])})
    _write_projects(w, projects, transform, gain, regrowth, dry_open)

    monitoring = np.zeros(shape, np.int32)
    for k, parcel in enumerate((p for p in projects if p["kind"] == "planted"), start=1):
        r0, c0, h, wd = parcel["window"]
        monitoring[r0:r0 + h, c0:c0 + wd][parcel["fraction"] > 0.999] = k
    _make_plots(rng, w, transform, carbon, elevation, remote | wetland | cloud, monitoring)
    _make_parcels(rng, w, transform, history, wetland, forest_now, base_forest, cleared, planted,
                  taken=_rasterize([p["geometry"] for p in projects], transform, shape))
    (folder / "README.txt").write_text(
        "SIMULATED DATA - the sinks demo county. Generated by sinks.demo.world.make_world "
        f"(seed {seed}); not real measurements. See that module's docstring for what each file is.\n",
        encoding="utf-8",
    )
    return w


def _plot_pixels(rng, unsampled, n_clusters=CLUSTERS, per_cluster=PLOTS_PER_CLUSTER):
    """Clustered plot pixels: ``n_clusters`` centres on accessible land, ``per_cluster`` plots around each.

    Field crews reach the county from its villages: plots come in clusters of ``per_cluster`` within
    ``CLUSTER_RADIUS_PX`` pixels of a centre, and none lie where ``unsampled`` is set (the remote
    upland, a region unlike any plot; the river wetland; the cloud).
    Forest and open land are sampled as they come, so the plots keep the county's land-cover mix.
    Returns (rows, cols) arrays (no pixel twice) and each plot's cluster id.
    """
    shape = unsampled.shape
    frame = ~unsampled
    frame[:CLUSTER_RADIUS_PX, :] = frame[-CLUSTER_RADIUS_PX:, :] = False
    frame[:, :CLUSTER_RADIUS_PX] = frame[:, -CLUSTER_RADIUS_PX:] = False
    candidates = np.argwhere(frame)
    centres = candidates[rng.choice(len(candidates), n_clusters, replace=False)]
    taken = np.zeros(shape, bool)
    rows, cols, cluster = [], [], []
    for k, (r0, c0) in enumerate(centres):
        placed = 0
        for _ in range(200):
            if placed == per_cluster:
                break
            r = int(r0 + rng.integers(-CLUSTER_RADIUS_PX, CLUSTER_RADIUS_PX + 1))
            c = int(c0 + rng.integers(-CLUSTER_RADIUS_PX, CLUSTER_RADIUS_PX + 1))
            if frame[r, c] and not taken[r, c]:
                taken[r, c] = True
                rows.append(r), cols.append(c), cluster.append(k)
                placed += 1
    return np.array(rows), np.array(cols), np.array(cluster)


def measure_plots(rng, rows, cols, carbon, elevation, noise, plot_ids) -> pd.DataFrame:
    """Tree lists of 1-mu plots at pixels (rows, cols) whose carbon is the pixel's truth x measurement noise.

    A plot is not its pixel: a 0.0667 ha plot samples part of a 0.09 ha pixel, and crews differ.
    The plot's carbon target is ``truth * exp(sigma * e - sigma^2 / 2)`` (e standard normal, mean
    preserving), ``sigma`` from :data:`NOISE_SD_LOG` by each plot's ``noise`` level: heteroscedastic,
    growing with the stock, and about three times larger for the ``high`` level. Trees (species by elevation
    band, diameters around a mean that grows with the stock, heights from :data:`HD_CURVES`) are
    added while each brings the plot's carbon (the cited allometry of :mod:`sinks.pools.forest`)
    closer to its target. Returns the trees table.
    """
    sigma = np.array([NOISE_SD_LOG[level] for level in noise])
    truth = carbon[rows, cols].astype(float)
    target_mg_ha = truth * np.exp(sigma * rng.standard_normal(len(rows)) - sigma ** 2 / 2)
    low, high = np.quantile(elevation, [0.33, 0.66])
    candidates = []
    n_candidates = 400
    for pid, r, c, goal in zip(plot_ids, rows, cols, target_mg_ha):
        if goal <= 0:
            continue
        band = "low" if elevation[r, c] < low else "high" if elevation[r, c] > high else "mid"
        names = [s[0] for s in SPECIES[band]]
        dominant = rng.choice(len(names), p=[s[2] for s in SPECIES[band]])
        species = np.where(rng.random(n_candidates) < 0.8, names[dominant], rng.choice(names, n_candidates))
        mean_dbh = 7 + 12 * min(carbon[r, c] / 170.0, 1.0)
        dbh = np.round(np.maximum(5.0, rng.lognormal(np.log(mean_dbh), 0.35, n_candidates)), 1)
        hmax, b = np.array([HD_CURVES[s] for s in species]).T
        height = np.round(np.maximum(1.5, 1.3 + hmax * (1 - np.exp(-b * dbh)) + rng.normal(0, 1.2, n_candidates)), 1)
        candidates.append(pd.DataFrame({"plot_id": pid, "tree_id": np.arange(1, n_candidates + 1), "species": species,
                                        "dbh_cm": dbh, "height_m": height, "_target": goal * PLOT_AREA_HA}))
    trees = pd.concat(candidates, ignore_index=True)
    carbon_mg = forest.tree_biomass(trees.drop(columns="_target"))[0]["carbon_mg"].to_numpy()
    cumulative = pd.Series(carbon_mg).groupby(trees["plot_id"]).cumsum().to_numpy()
    previous = cumulative - carbon_mg
    goal = trees["_target"].to_numpy()
    keep = (previous < goal) & (cumulative - goal < goal - previous)  # each tree brings the plot closer
    trees = trees.loc[keep].drop(columns="_target")
    zh = {s[0]: s[1] for band in SPECIES.values() for s in band}
    trees.insert(3, "species_zh", trees["species"].map(zh))
    return trees.reset_index(drop=True)


def _plot_table(rows, cols, transform, plot_ids, noise, carbon, **extra) -> gpd.GeoDataFrame:
    x, y = transform @ (cols + 0.5, rows + 0.5)
    sigma = np.array([NOISE_SD_LOG[level] for level in noise])
    truth = carbon[rows, cols].astype(float)
    return gpd.GeoDataFrame({"plot_id": plot_ids, "area_ha": PLOT_AREA_HA, "year": 2025, **extra,
                             "noise_level": noise,
                             # the known sd of the plot's carbon around its pixel's truth (lognormal)
                             "measurement_sd_mg_ha": truth * np.sqrt(np.expm1(sigma ** 2))},
                            geometry=[Point(a, b) for a, b in zip(x, y)], crs=CRS)


def _make_plots(rng, w: DemoWorld, transform, carbon, elevation, unsampled, monitoring):
    """The inventory plots, then the project's monitoring plots: ``MONITORING_PLOTS`` at pixels of
    ``monitoring`` (wholly planted pixels), one cluster and crew per planted parcel (``monitoring``
    holds the parcel's number, 0 elsewhere), as a CCER project measures its own plantations."""
    rows, cols, cluster = _plot_pixels(rng, unsampled)
    for k in range(1, int(monitoring.max()) + 1):
        inside = np.argwhere(monitoring == k)
        chosen = inside[rng.choice(len(inside), min(MONITORING_PLOTS, len(inside)), replace=False)]
        rows, cols = np.concatenate([rows, chosen[:, 0]]), np.concatenate([cols, chosen[:, 1]])
        cluster = np.concatenate([cluster, np.full(len(chosen), CLUSTERS + k - 1)])
    plot_ids = [f"P{i + 1:03d}" for i in range(len(rows))]
    crew_noise = rng.choice(list(NOISE_SD_LOG), int(cluster.max()) + 1)  # one crew, one noise level, per cluster
    noise = crew_noise[cluster]
    trees = measure_plots(rng, rows, cols, carbon, elevation, noise, plot_ids)
    trees.to_csv(w.trees, index=False)
    _plot_table(rows, cols, transform, plot_ids, noise, carbon,
                cluster=cluster).to_file(w.plots, driver="GPKG", layer="plots")


def simulate_test_plots(world: DemoWorld, n: int = 1000, *, seed: int = 0) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Independent test plots at ``n`` random valid pixels of the whole county, measured like the plots.

    Unlike the training plots they are not clustered and do reach the remote upland: the places a
    map is used for. Each plot gets a random noise level and the same measurement model
    (:func:`measure_plots`); its table carries ``carbon_truth_mg_ha`` (the hidden pixel truth) beside
    the noise level and known ``measurement_sd_mg_ha``. Returns (plots, trees) for
    :func:`sinks.pools.forest.forest_stocks`.
    """
    rng = np.random.default_rng([seed, 7])
    with rasterio.open(world.carbon_truth) as t, rasterio.open(world.dem) as d, rasterio.open(world.reflectance) as r:
        carbon, elevation, transform = t.read(1), d.read(1), t.transform
        valid = r.read_masks(1) > 0
    pixels = np.argwhere(valid)
    rows, cols = pixels[rng.choice(len(pixels), n, replace=False)].T
    plot_ids = [f"T{i + 1:04d}" for i in range(n)]
    noise = rng.choice(list(NOISE_SD_LOG), n)
    trees = measure_plots(rng, rows, cols, carbon, elevation, noise, plot_ids)
    plots = _plot_table(rows, cols, transform, plot_ids, noise, carbon,
                        carbon_truth_mg_ha=carbon[rows, cols].astype(float))
    return plots, trees


def _make_parcels(rng, w: DemoWorld, transform, history, wetland, forest_now, base_forest, cleared, planted, *,
                  taken: np.ndarray):
    ever_forest = history.max(axis=0).astype(bool)
    stable_open = ~ever_forest & ~wetland
    kinds = [  # (kind, count, side range m, condition on the parcel's pixels, verdict, reason)
        ("open_land", 10, (120, 380), lambda m: stable_open[m].all(), "eligible",
         "non-forest in every year, dry land, large enough"),
        ("cleared_2023", 4, (120, 250), lambda m: (cleared[m] & ~planted[m]).all(), "ineligible",
         f"forest until {CLEARED_YEAR - 1}, cleared in {CLEARED_YEAR}"),
        ("wetland", 3, (150, 300), lambda m: wetland[m].mean() > 0.5 and not ever_forest[m].any(), "ineligible",
         "mostly river wetland"),
        ("standing_forest", 3, (120, 300), lambda m: (base_forest[m] & ~cleared[m]).all(), "ineligible",
         "forest in every year"),
        ("too_small", 3, (12, 18), lambda m: stable_open[m].all(), "ineligible", "smaller than 400 m2 (0.04 ha)"),
    ]
    records, truth, taken = [], [], taken.copy()
    size = history.shape[1]
    scale = min(1.0, size / 400)  # smaller parcels in a smaller county, except the too-small ones
    for kind, count, (lo, hi), condition, verdict, reason in kinds:
        if kind != "too_small":
            lo, hi = max(90.0, lo * scale), max(100.0, hi * scale)
        made = 0
        for _ in range(5000):
            if made == count:
                break
            cx, cy = transform @ (rng.uniform(20, size - 20), rng.uniform(20, size - 20))
            width, height = rng.uniform(lo, hi), rng.uniform(lo, hi)
            shape = affinity.rotate(box(cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2),
                                    rng.uniform(0, 90))
            mask = ~geometry_mask([shape], out_shape=taken.shape, transform=transform, all_touched=True)
            if not mask.any() or taken[mask].any() or not condition(mask):
                continue
            taken |= mask
            made += 1
            pid = f"{kind}_{made:02d}"
            records.append({"parcel_id": pid, "start_date": START_DATE, "geometry": shape})
            truth.append({"parcel_id": pid, "kind": kind, "truth_verdict": verdict, "reason": reason,
                          "area_ha": shape.area / 10_000})
        if made < count:
            raise RuntimeError(f"demo world: could only place {made} of {count} '{kind}' parcels")
    gpd.GeoDataFrame(records, crs=CRS).to_file(w.parcels, driver="GPKG", layer="parcels")
    pd.DataFrame(truth).to_csv(w.parcels_truth, index=False)
