"""``sinks demo [--out DIR]``: the whole chain on the simulated demo county."""

from __future__ import annotations

from sinks.cli._common import add_overwrite, add_quiet, echo, nonnegative_int, positive_int, show_progress


def register(sub) -> None:
    parser = sub.add_parser(
        "demo",
        help="run the whole chain on a simulated demo county (about a minute, no download)",
        description="Generate a SIMULATED demo county with known truth (terrain, reflectance, forest "
        "history, inventory plots with tree lists, candidate afforestation parcels) and run every "
        "step on it: plot stocks -> covariates -> XGBoost with random, block and kNNDM CV -> model bundle "
        "-> carbon maps of 2020 and 2025 (COG) -> eligibility report -> creditable t CO2e of an afforestation "
        "project; then check the map, the intervals, the verdicts and the credits against the truth.",
    )
    parser.add_argument("--out", default="sinks-demo", help="folder for the demo workspace (default: ./sinks-demo)")
    parser.add_argument("--seed", type=nonnegative_int, default=2025, help="random seed of the simulated county (default 2025)")
    parser.add_argument("--size", type=positive_int, default=400, help="county size in 30 m pixels per side (default 400 = 12 km)")
    parser.add_argument("--jobs", type=positive_int, default=1, help="threads for the map step (default 1)")
    add_quiet(parser, "bars")
    add_overwrite(parser, "demo workspace (a folder 'sinks demo' made)")
    parser.set_defaults(func=run, outputs={"out": "workspace"})


def run(args) -> None:
    from sinks.demo.run import run_demo

    result = run_demo(args.out, seed=args.seed, size=args.size, n_jobs=args.jobs, progress=show_progress(args),
                      overwrite=args.overwrite)
    check = result.checks["map_vs_truth"]
    spatial = result.checks["validation"]["spatial"]
    echo(f"sinks demo: SIMULATED county in {result.out} ({sum(result.seconds.values()):.0f} s)")
    echo(f"  model  spatial-CV R2 {spatial['r2']:.2f}, RMSE {spatial['rmse']:.1f} Mg C/ha "
         f"(random-CV R2 {result.checks['validation']['random']['r2']:.2f})")
    echo(f"  map    vs hidden truth: R2 {check['r2']:.2f}, RMSE {check['rmse_mg_ha']:.1f} Mg C/ha, "
         f"interval coverage {check['interval_coverage']:.0%}, {check['aoa_fraction']:.0%} of pixels in the AOA")
    test = result.checks.get("intervals_vs_test_plots")
    if test:
        parts = ", ".join(f"{float(k):.0%} -> {v['inside_aoa']:.0%}" for k, v in test["levels"].items())
        echo(f"  intervals on {test['n']} independent test plots, inside the AOA: {parts} "
             f"(outside the AOA: {test['levels']['0.9']['outside_aoa']:.0%} at 90%)")
    credits = result.checks.get("credits_vs_truth")
    if credits:
        pl, pb, pj = credits["planted"], credits["placebo"], credits["project"]
        echo(f"  project {pl['credited']} of {pl['n']} planted parcels credited {pl['credited_tco2e']:.0f} t CO2e "
             f"(true gain {pl['true_gain_tco2e']:.0f}; over-credited {pl['over_credited']}), the project "
             f"{pj['tco2e']:.0f} t CO2e (bound by {pj['binding'].replace('_', ' ')}); "
             f"{pb['n']} placebo parcels, credited on their own, {pb['credited_tco2e']:.0f} t CO2e")
    if "eligibility" in result.checks:
        el = result.checks["eligibility"]
        echo(f"  parcels {el['agree']} of {el['n']} verdicts match the known truth "
             f"({', '.join(f'{k} {v}' for k, v in el['verdicts'].items())})")
    echo("outputs:")
    for name, path in result.outputs.items():
        echo(f"  {name:<16} {path}")
