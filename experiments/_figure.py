"""Shared command line of the figure experiments: parse, build one figure, write it, say where."""

from __future__ import annotations

import argparse
import sys

from mechgrok import circuits, figures


def figure_main(name: str, doc: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0], epilog="\n".join(doc.strip().splitlines()[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder (mechgrok train / mechgrok reproduce --out RUN)")
    parser.add_argument("--rule", default=circuits.DEFAULT_KEY_FREQUENCY_RULE, choices=sorted(circuits.KEY_FREQUENCY_RULES),
                        help=f"key-frequency rule (default: {circuits.DEFAULT_KEY_FREQUENCY_RULE})")
    parser.add_argument("--threshold", type=float, default=0.85, help="neuron-cluster threshold (default: 0.85)")
    parser.add_argument("--out", default=None, help=f"output folder (default: RUN/{figures.FIGURE_DIR})")
    args = parser.parse_args(argv)
    try:
        analysis = figures.RunAnalysis(args.run, rule=args.rule, threshold=args.threshold)
        out = figures.make_figure(name, analysis)
        paths = figures.write_figure(out, args.run, args.out)
    except (ValueError, FileNotFoundError) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    print(f"{name}: {out.caption}")
    for path in paths:
        print(f"  wrote {path}")
    return 0
