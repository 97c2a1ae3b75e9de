"""``sinks train RECIPE TABLE --out BUNDLE``: fit, validate and save a model bundle."""

from __future__ import annotations

import json

from sinks.cli._common import add_overwrite, echo
from sinks.io import read_table


def register(sub) -> None:
    parser = sub.add_parser(
        "train",
        help="train a recipe with random and spatial CV -> model bundle",
        description="Fit the recipe's estimator on a feature table (from 'sinks extract'), report "
        "random and spatial-block cross-validation, calibrate prediction intervals on the spatial "
        "out-of-fold residuals, compute the area-of-applicability reference, and save a bundle "
        "folder (model, metadata, metrics, model card).",
    )
    parser.add_argument("recipe", help="training recipe (training/*.toml)")
    parser.add_argument("table", help="feature table from 'sinks extract' (.csv or .parquet)")
    parser.add_argument("--out", required=True,
                        help="bundle folder to write (e.g. models/NAME); its parent folder must exist, "
                        "and a folder that is not a bundle is never replaced")
    add_overwrite(parser, "bundle")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run, outputs={"out": "bundle"}, inputs=("recipe", "table"))


def run(args) -> None:
    from sinks.learn.recipe import load_recipe
    from sinks.learn.train import train

    recipe = load_recipe(args.recipe)
    table = read_table(args.table, required=("x", "y"))
    folder = train(recipe, table, args.out, progress=not args.quiet, source=args.table)
    meta = json.loads((folder / "metadata.json").read_text())
    units = meta["target"]["units"]
    echo(f"recipe {recipe.name!r}: {meta['training']['n']} plots used, {meta['training']['dropped']} dropped (missing values)")
    for scheme in ("random", "spatial"):
        s = meta["validation"][scheme]
        echo(f"  {scheme:<8} {s['folds']}-fold CV: R2 {s['r2']:.3f}, RMSE {s['rmse']:.3g} {units}, bias {s['bias']:+.3g}")
    echo(f"  {meta['interval']['level']:.0%} interval half-width {meta['interval']['half_width']:.3g} {units}")
    echo(f"bundle {meta['bundle_id']} -> {folder}")
