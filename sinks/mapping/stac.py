"""A STAC Item beside each map: what the map is, its bands and units, and what it was made from.

Written by hand (no dependency) after the STAC 1.0.0 Item specification with the ``raster``
(v1.1.0), ``eo`` (v1.1.0), ``projection`` (v1.1.0) and ``file`` (v2.1.0) extensions; ``pystac``
reads it (``pystac.Item.from_file``). Provenance that STAC has no field for sits under the
``sinks:`` prefix: the bundle id, the inputs' sha256, the bands and the version.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

STAC_VERSION = "1.0.0"
EXTENSIONS = (
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/file/v2.1.0/schema.json",
)
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def stac_path(map_path: str | os.PathLike) -> Path:
    """Where the item of ``map_path`` goes: ``NAME.stac.json`` beside ``NAME.tif``."""
    path = Path(map_path)
    return path.with_name(path.stem + ".stac.json")


def multihash_sha256(path: str | os.PathLike) -> str:
    """The file's sha256 as a multihash (hex), as the STAC file extension's ``file:checksum`` wants."""
    from sinks.io import sha256_file

    return "1220" + sha256_file(path)


def map_item(map_path: str | os.PathLike, *, grid, bands: list[dict], bundle, inputs: dict[str, str],
             parameters: dict, nodata: float, href: str | None = None) -> dict:
    """The STAC Item (a dict) of a map COG at ``map_path``.

    ``bands``: one ``{"name", "unit", "description"}`` per band in file order; ``inputs``: ``{role or
    path: sha256}``; ``parameters``: the arguments that shaped the map.
    """
    from rasterio.warp import transform_bounds

    map_path = Path(map_path)
    left, bottom, right, top = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21)
    ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
    epsg = grid.crs.to_epsg()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    t = grid.transform
    properties = {
        "datetime": now,
        "created": now,
        "title": f"{bundle.band} map of bundle {bundle.bundle_id}",
        "description": f"{bundle.metadata['target']['column']} ({bundle.units}) predicted by sinks bundle "
                       f"{bundle.bundle_id} (recipe {bundle.metadata['recipe']['name']!r}); datetime is when "
                       "the map was made",
        "proj:epsg": epsg,
        "proj:shape": [grid.height, grid.width],
        "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "proj:bbox": list(grid.bounds),
        "sinks:bundle_id": bundle.bundle_id,
        "sinks:bands": [b["name"] for b in bands],
        "sinks:inputs": inputs,
        "sinks:parameters": parameters,
        "sinks:version": bundle.metadata.get("versions", {}).get("sinks"),
    }
    if epsg is None:
        properties["proj:wkt2"] = grid.crs.to_wkt()
    asset = {
        "href": href or f"./{map_path.name}",
        "type": COG_MEDIA_TYPE,
        "title": f"{', '.join(b['name'] for b in bands)}",
        "roles": ["data"],
        "file:size": map_path.stat().st_size,
        "file:checksum": multihash_sha256(map_path),
        "raster:bands": [{"name": b["name"], "description": b["description"], "nodata": nodata,
                          "data_type": "float32", "unit": b["unit"],
                          "spatial_resolution": abs(t.a)} for b in bands],
        "eo:bands": [{"name": b["name"], "description": b["description"]} for b in bands],
    }
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": list(EXTENSIONS),
        "id": f"{map_path.stem}-{bundle.bundle_id}",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [left, bottom, right, top],
        "properties": properties,
        "links": [],
        "assets": {"map": asset},
    }


def write_item(item: dict, path: str | os.PathLike) -> Path:
    """Write the item as JSON (to a staging name first: see :func:`sinks.io.atomic_path`)."""
    Path(path).write_text(json.dumps(item, indent=2, default=str) + "\n", encoding="utf-8")
    return Path(path)
