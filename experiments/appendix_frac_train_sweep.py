"""python -m experiments.appendix_frac_train_sweep --run RUN [--fracs 0.3 0.4 0.5 0.6 0.7] [--epochs 5000] [--out DIR]

Appendix (opt-in: it trains one run per fraction): the paper's training-fraction sweep. With the
settings of RUN and each training fraction in --fracs, train (or resume) RUN/frac_train_sweep/frac_train_<f>/
for --epochs epochs, then plot test loss and accuracy per fraction. The paper: 30-50% of the
pairs groks after a delay; 60% or more generalizes at once.

At p=113 each run takes epochs x ~15-20 ms on 2 CPU cores (5 fractions x 5,000 epochs: ~8 min).
Writes RUN/figures/appendix_frac_train_sweep.html and .csv (frac_train, epoch, losses, accuracies).
"""

from __future__ import annotations

import argparse
import sys

from mechgrok import figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder whose settings the sweep copies")
    parser.add_argument("--fracs", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7], help="training fractions")
    parser.add_argument("--epochs", type=int, default=5000, help="epochs per run (default: 5000)")
    parser.add_argument("--out", default=None, help=f"output folder (default: RUN/{figures.FIGURE_DIR})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    try:
        out = figures.appendix_frac_train_sweep(args.run, args.fracs, args.epochs, progress_bar=not args.no_progress)
        paths = figures.write_figure(out, args.run, args.out)
    except (ValueError, FileNotFoundError) as err:
        print(f"appendix_frac_train_sweep: error: {err}", file=sys.stderr)
        return 2
    print(f"appendix_frac_train_sweep: {out.caption}")
    for path in paths:
        print(f"  wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
