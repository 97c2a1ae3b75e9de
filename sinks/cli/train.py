"""``sinks train RECIPE TABLE --out BUNDLE``: fit, validate and save a model bundle."""

from __future__ import annotations

import json
import sys

from sinks.cli._common import add_overwrite, add_quiet, add_rename, echo, show_progress, table_options


def register(sub) -> None:
    parser = sub.add_parser(
        "train",
        help="train a recipe with random, block and kNNDM CV -> model bundle",
        description="Fit the recipe's estimator on a feature table (from 'sinks extract'), report "
        "random, spatial-block (block size from the target's variogram unless given) and kNNDM "
        "cross-validation side by side, calibrate location-adaptive conformal intervals on the "
        "chosen scheme's out-of-fold residuals and check their coverage on held-out folds, compute "
        "the area of applicability and its error profile, and save a bundle folder (model, "
        "metadata, metrics, model card).",
    )
    parser.add_argument("recipe", help="training recipe (training/*.toml)")
    parser.add_argument("table", help="feature table from 'sinks extract' (.csv or .parquet)")
    parser.add_argument("--out", required=True,
                        help="bundle folder to write (e.g. models/NAME); its parent folder must exist, "
                        "and a folder that is not a bundle is never replaced")
    add_overwrite(parser, "bundle")
    add_rename(parser)
    add_quiet(parser, "bars")
    parser.set_defaults(func=run, outputs={"out": "bundle"}, inputs=("recipe", "table"))


def run(args) -> None:
    from sinks.io import read_table
    from sinks.learn.recipe import load_recipe
    from sinks.learn.train import train

    recipe = load_recipe(args.recipe)
    table = read_table(args.table, required=("x", "y"), **table_options(args))
    folder = train(recipe, table, args.out, progress=show_progress(args), source=args.table)
    meta = json.loads((folder / "metadata.json").read_text())
    units = meta["target"]["units"]
    echo(f"recipe {recipe.name!r}: {meta['training']['n']} plots used, {meta['training']['dropped']} dropped (missing values)")
    constant = meta["training"].get("constant_features")
    if constant:
        print(f"sinks train: warning: feature(s) {', '.join(constant)} hold one value at every usable plot: the model "
              "cannot learn from them; check the feature spec and the rasters behind them", file=sys.stderr)
    shared, outside = meta["training"].get("plots_sharing_a_location"), meta["training"].get("plots_outside_grid")
    if shared:
        print(f"sinks train: warning: {shared} plots share their x, y with another plot (remeasurements or "
              "duplicates): random CV (and kNNDM where it falls back to random folds) scores them as independent "
              "and is optimistic; spatial blocks keep each location in one fold", file=sys.stderr)
    if outside:
        print(f"sinks train: warning: {outside} plots lie outside the spec's grid, where no map pixel is; "
              "check their coordinates", file=sys.stderr)
    setup = meta["validation_setup"]
    spacing = setup.get("plot_spacing_m")
    if "blocks" in meta["validation"] and spacing and setup.get("block_size", 0) < spacing:
        print(f"sinks train: warning: blocks of {setup['block_size']:g} m are smaller than the plots' median spacing "
              f"({spacing:.4g} m to the nearest other plot): most blocks hold one plot, so 'blocks' CV is close to "
              "random CV and as optimistic; leave [validation] block_size out (the variogram range) or give a "
              "larger one", file=sys.stderr)
    chosen = meta["validation_setup"].get("scheme")
    for scheme, s in meta["validation"].items():
        if scheme == "spatial" and s.get("scheme") in meta["validation"]:
            continue  # the alias of the chosen scheme
        w = f", W {s['W']:.3g}" if s.get("W") is not None else ""
        mark = "  <- chosen" if scheme == chosen else ""
        if s.get("tuning") and s["tuning"] != "nested":
            mark += "  (not nested: optimistic by the tuning)"
        knndm = meta["validation_setup"].get("knndm") or {}
        if scheme == "knndm" and knndm.get("method") == "random":  # CAST's choice when the plots are representative
            mark += f"  (random folds: the plots are representative of the map, KS p = {knndm.get('ks_pvalue', float('nan')):.2g})"
        echo(f"  {scheme:<8} {s['folds']}-fold CV: R2 {s['r2']:.3f}, RMSE {s['rmse']:.3g} {units}, "
             f"bias {s['bias']:+.3g}{w}{mark}")
    if meta.get("tuning"):
        final = meta["tuning"]["final"]
        echo(f"  nested in {meta['tuning']['scheme']} ({meta['tuning']['fits']} fits): features "
             f"{', '.join(final['features'])}; params {json.dumps(final['params'])}; {final['metric']} "
             f"{final['inner_score']:.3g} non-nested vs {meta['tuning']['nested_score']:.3g} nested")
    if meta["validation_setup"].get("block_size_from", "recipe") != "recipe":
        echo(f"  blocks of {meta['validation_setup']['block_size']:.4g} m ({meta['validation_setup']['block_size_from']})")
    iv = meta["interval"]
    if "method" in iv:
        check = meta["interval_check"][iv["method"]]
        echo(f"  {iv['level']:.0%} {iv['method']} intervals, on held-out folds: coverage {check['coverage']:.1%} "
             f"(inside AOA {check['inside_aoa']['coverage'] or 0:.1%}), width {check['mean_width']:.3g} "
             f"± {check['sd_width']:.3g} {units}")
        refit = (meta.get("interval_check_refit") or {}).get("methods", {}).get(iv["method"])
        if refit:
            echo(f"  refit check ({meta['interval_check_refit']['fits']} fits, nothing fitted with the held-out "
                 f"fold): coverage {refit['coverage']:.1%} (inside AOA {refit['inside_aoa']['coverage'] or 0:.1%}), "
                 f"width {refit['mean_width']:.3g} ± {refit['sd_width']:.3g} {units}")
    else:
        echo(f"  {iv['level']:.0%} interval half-width {iv['half_width']:.3g} {units}")
    echo(f"bundle {meta['bundle_id']} -> {folder}")
