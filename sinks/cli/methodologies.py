"""``sinks methodologies``: the shipped methodologies (rule sets) with id, title, version and source."""

from __future__ import annotations

from sinks.cli._common import echo


def register(sub) -> None:
    parser = sub.add_parser(
        "methodologies",
        help="list the shipped methodologies (rule sets): id, title, version, source",
        description="List the methodologies sinks ships as data (sinks/eligibility/rulesets/*.toml): id, "
        "scheme, version, title, and the source the rules were read in. --show ID prints one "
        "methodology's crediting terms with the source and confidence of each.",
    )
    parser.add_argument("--show", metavar="ID", help="print the crediting terms of one methodology (id or file)")
    parser.set_defaults(func=run)


def run(args) -> None:
    from sinks.eligibility.crediting import methodology_list

    if args.show:
        from sinks.eligibility.rules import load_ruleset

        rs = load_ruleset(args.show)
        echo(f"{rs.id} ({rs.scheme}, version {rs.version}): {rs.title}")
        echo(f"  source: {rs.source or rs.methodology}")
        if rs.crediting is None:
            echo("  no crediting terms (eligibility only)")
            return
        for name, term in rs.crediting.terms.items():
            values = ", ".join(f"{k}={v}" for k, v in term.values.items()) or "project-specific: give it with --term"
            echo(f"  {name}: {values}")
            echo(f"    source: {term.source}")
            echo(f"    confidence: {term.confidence}")
        return
    for m in methodology_list():
        echo(f"{m['id']:<13} {m['scheme']:<8} v{m['version']:<5} {m['title']}")
        echo(f"{'':<13} source: {m['source']}")
