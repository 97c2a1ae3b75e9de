"""``sinks change MAP_T1 MAP_T2 --years Y1 Y2 --out SINK.tif``: annual sink map from two epochs."""

from __future__ import annotations

import argparse

from sinks.cli._common import add_overwrite, add_quiet, block_size, echo, interval_level, show_progress


def _correlation(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between -1 and 1, got {text!r}") from None
    if not -1 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number between -1 and 1, got {text!r}")
    return value


_correlation.__name__ = "correlation"


def level_option(parser) -> None:
    parser.add_argument("--level", type=interval_level, metavar="P",
                        help="level of the output interval, e.g. 0.9 (default: the input map's)")


def _year(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a year, got {text!r}") from None
    return value


_year.__name__ = "year"


def register(sub) -> None:
    parser = sub.add_parser(
        "change",
        help="two carbon maps -> annual sink map (t CO2e/ha/yr) with interval and AOA of both",
        description="Annual sink by the stock-difference method (IPCC 2006 GL Vol. 4 Ch. 2 Eq. 2.5): "
        "(C2 - C1) x 44/12 / (Y2 - Y1), in t CO2e/ha/yr, positive = removal. The interval combines each "
        "map's interval (read as normal: sd = half-width / z of its level) with a stated correlation "
        "between the epochs' errors. Output COG bands: sink, lower, upper, aoa (1 where both epochs are "
        "inside their area of applicability). Both maps must share grid, units and model bundle.",
    )
    parser.add_argument("map_t1", help="carbon map of the first epoch (from 'sinks map')")
    parser.add_argument("map_t2", help="carbon map of the second epoch, on the same grid")
    parser.add_argument("--years", nargs=2, type=_year, metavar=("Y1", "Y2"),
                        help="the years of MAP_T1 and MAP_T2 (Y2 > Y1); by default the maps' own years, from "
                             "'sinks map --year' (checked against them when given)")
    parser.add_argument("--out", required=True, help="output COG (.tif)")
    parser.add_argument("--epoch-correlation", type=_correlation, default=0.0, metavar="RHO",
                        help="correlation of the two epochs' errors at a pixel, -1 to 1 (default 0: "
                        "independent, which is conservative for any positive correlation; -1 is the widest)")
    level_option(parser)
    parser.add_argument("--allow-different-models", action="store_true",
                        help="difference maps made by different model bundles (recorded in the tags)")
    parser.add_argument("--block", type=block_size, default=512,
                        help="window size in pixels, a multiple of 16 (default 512; bounds the memory)")
    add_overwrite(parser)
    add_quiet(parser)
    parser.set_defaults(func=run, outputs={"out": "raster"}, inputs=("map_t1", "map_t2"))


def run(args) -> None:
    from sinks.mapping.change import stock_change, years_of_maps

    y1, y2 = years_of_maps(args.years, args.map_t1, args.map_t2)
    path = stock_change(args.map_t1, args.map_t2, y1, y2, args.out, epoch_correlation=args.epoch_correlation,
                        level=args.level, allow_different_models=args.allow_different_models,
                        block=args.block, progress=show_progress(args))
    echo(f"sink {y1:g}-{y2:g} (epoch correlation {args.epoch_correlation:g}) -> {path}")
