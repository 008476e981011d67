"""Shared command line of the figure experiments: parse, build one figure, write it, say where."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from mechgrok import circuits, figures


def _parser(doc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc.strip().splitlines()[0], epilog="\n".join(doc.strip().splitlines()[2:]),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def _write(name: str, build: Callable[[], figures.FigureOutput], run: str, out_dir: str | None) -> int:
    try:
        out = build()
        paths = figures.write_figure(out, run, out_dir)
    except (ValueError, FileNotFoundError) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    print(f"{name}: {out.caption}")
    for path in paths:
        print(f"  wrote {path}")
    return 0


def figure_main(name: str, doc: str, argv: list[str] | None = None) -> int:
    parser = _parser(doc)
    parser.add_argument("--run", required=True, help="run folder (mechgrok train / mechgrok reproduce --out RUN)")
    parser.add_argument("--rule", default=circuits.DEFAULT_KEY_FREQUENCY_RULE, choices=sorted(circuits.KEY_FREQUENCY_RULES),
                        help=f"key-frequency rule (default: {circuits.DEFAULT_KEY_FREQUENCY_RULE})")
    parser.add_argument("--threshold", type=float, default=0.85, help="neuron-cluster threshold (default: 0.85)")
    parser.add_argument("--out", default=None, help=f"output folder (default: RUN/{figures.FIGURE_DIR})")
    args = parser.parse_args(argv)
    return _write(name, lambda: figures.make_figure(name, figures.RunAnalysis(args.run, rule=args.rule, threshold=args.threshold)),
                  args.run, args.out)


def sweep_main(
    name: str,
    doc: str,
    argv: list[str] | None,
    *,
    flag: str,
    values_help: str,
    default: list[float],
    build: Callable[..., figures.FigureOutput],
) -> int:
    """The opt-in sweeps: train one run per value of ``flag`` with RUN's settings, then plot them."""
    parser = _parser(doc)
    parser.add_argument("--run", required=True, help="run folder whose settings the sweep copies")
    parser.add_argument(flag, dest="values", type=float, nargs="+", default=default, help=values_help)
    parser.add_argument("--epochs", type=int, default=5000, help="epochs per run (default: 5000)")
    parser.add_argument("--out", default=None, help=f"output folder (default: RUN/{figures.FIGURE_DIR})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    return _write(name, lambda: build(args.run, args.values, args.epochs, progress_bar=not args.no_progress), args.run, args.out)
