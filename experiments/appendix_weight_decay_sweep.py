"""python -m experiments.appendix_weight_decay_sweep --run RUN [--values 0.3 1 3] [--epochs 5000] [--out DIR]

Appendix (opt-in: it trains one run per value): weight-decay effects. With the settings of RUN
and each AdamW weight decay in --values, train (or resume)
RUN/weight_decay_sweep/weight_decay_<v>/ for --epochs epochs, then plot test loss and accuracy
per value. Weight decay drives circuit formation and cleanup: with less of it, grokking comes
later or not at all.

At p=113 each run takes epochs x ~15-20 ms on 2 CPU cores (3 values x 5,000 epochs: ~5 min).
Writes RUN/figures/appendix_weight_decay_sweep.html and .csv (weight_decay, epoch, losses, accuracies).
"""

from __future__ import annotations

import argparse
import sys

from mechgrok import figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder whose settings the sweep copies")
    parser.add_argument("--values", type=float, nargs="+", default=[0.3, 1.0, 3.0], help="weight decays")
    parser.add_argument("--epochs", type=int, default=5000, help="epochs per run (default: 5000)")
    parser.add_argument("--out", default=None, help=f"output folder (default: RUN/{figures.FIGURE_DIR})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    try:
        out = figures.appendix_weight_decay_sweep(args.run, args.values, args.epochs, progress_bar=not args.no_progress)
        paths = figures.write_figure(out, args.run, args.out)
    except (ValueError, FileNotFoundError) as err:
        print(f"appendix_weight_decay_sweep: error: {err}", file=sys.stderr)
        return 2
    print(f"appendix_weight_decay_sweep: {out.caption}")
    for path in paths:
        print(f"  wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
