"""``sinks evaluate BUNDLE TABLE [--out REPORT.json] [--plot FIGURE.png]``: external validation."""

from __future__ import annotations

import sys
from pathlib import Path

from sinks.cli._common import add_level, add_overwrite, add_rename, echo, table_options


def register(sub) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="score a model bundle on new plots (external validation)",
        description="Predict the plots of a feature table (from 'sinks extract', with the bundle's "
        "feature columns and its target column) with a model bundle and score them: R2, RMSE, "
        "relative RMSE, MAE, bias, the coverage and mean width of the bundle's prediction interval, "
        "and the share of plots inside the area of applicability, overall and inside / outside it. "
        "Rows with a missing target or feature are dropped and counted. Use plots the model was not "
        "trained on.",
    )
    parser.add_argument("bundle", help="model bundle folder (from 'sinks train')")
    parser.add_argument("table", help="feature table of the validation plots (.csv or .parquet)")
    parser.add_argument("--out", metavar="REPORT.json", help="write the scores as a JSON report")
    parser.add_argument("--plot", metavar="FIGURE.png",
                        help="draw observed vs predicted and coverage by DI bin (needs sinks[plot])")
    add_level(parser)
    add_overwrite(parser)
    add_rename(parser)
    parser.set_defaults(func=run, outputs={"out": "json", "plot": "figure"}, inputs=_inputs)


def _inputs(args) -> list[str]:
    """The table and the bundle's own files (an output may never replace one of them)."""
    folder = Path(args.bundle)
    files = [str(p) for p in folder.iterdir()] if folder.is_dir() else []
    return [args.table, *files]


def _pct(value) -> str:
    return "–" if value is None else f"{value:.1%}"


#: Below this share of plots inside the AOA, ``sinks evaluate`` warns that the features may be in
#: other units or under other names (a judgement threshold, not a statistic).
OUTSIDE_AOA_WARNING = 0.5


def _num(value, spec: str = ".3g") -> str:
    return "–" if value is None else format(value, spec)


def run(args) -> None:
    from sinks.bundle import load_bundle
    from sinks.errors import require
    from sinks.io import read_table
    from sinks.learn.evaluate import evaluate, write_report

    if args.plot:
        require("matplotlib", "plot")
    bundle = load_bundle(args.bundle)
    if args.level is not None:
        bundle = bundle.at_level(args.level)
    table = read_table(args.table, **table_options(args))
    result = evaluate(bundle, table, source=args.table)
    units = f" {result.units}" if result.units else ""
    o = result.overall
    echo(f"bundle {result.bundle_id} on {args.table}: {result.n} plot{'s' * (result.n != 1)} used, "
         f"{result.dropped} dropped (missing values)")
    if result.training_plots:
        print(f"sinks evaluate: warning: {result.training_plots} of the {result.n} plots are the bundle's own "
              "training plots (its oof.csv: the same id, place or features, the last also a plot in a training "
              "plot's pixel): their scores are not an external validation", file=sys.stderr)
    echo(f"  R2 {_num(o['r2'], '.3f')}, RMSE {_num(o['rmse'])}{units} (relative {_pct(o['rel_rmse'])}), "
         f"MAE {_num(o['mae'])}, bias {_num(o['bias'], '+.3g')}")
    if result.cv:
        echo(f"  (the bundle's {result.cv['scheme']} CV: R2 {_num(result.cv['r2'], '.3f')}, "
             f"RMSE {_num(result.cv['rmse'])}{units}, interval coverage {_pct(result.cv.get('coverage'))})")
    echo(f"  {result.level:.0%} intervals: coverage {_pct(o['coverage'])}, mean width {_num(o['mean_width'])}{units}")
    echo(f"  inside the AOA: {_pct(result.share_inside_aoa)} of the plots")
    if result.share_inside_aoa is not None and result.share_inside_aoa < OUTSIDE_AOA_WARNING:
        print(f"sinks evaluate: warning: only {_pct(result.share_inside_aoa)} of the plots are inside the bundle's "
              "area of applicability: their features are unlike the training plots'. If they come from the same "
              "kind of land, check that each feature column is in the training's units and under its own name "
              "(an elevation in km, two columns swapped) and was made with the bundle's feature spec", file=sys.stderr)
    for label, part in (("inside AOA", result.inside_aoa), ("outside AOA", result.outside_aoa)):
        if part["n"]:
            echo(f"    {label:<12} n {part['n']}: R2 {_num(part['r2'], '.3f')}, RMSE {_num(part['rmse'])}, "
                 f"bias {_num(part['bias'], '+.3g')}, coverage {_pct(part['coverage'])}, "
                 f"width {_num(part['mean_width'])}")
    if args.out:
        write_report(result, args.out, extra={"bundle": str(args.bundle), "table": str(args.table)})
        echo(f"report -> {args.out}")
    if args.plot:
        from sinks.learn.card_figures import draw_evaluation, save_png

        save_png(draw_evaluation(result, bundle.metadata), args.plot)  # atomic
        echo(f"figure -> {args.plot}")
