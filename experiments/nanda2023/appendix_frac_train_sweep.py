"""python experiments/nanda2023/appendix_frac_train_sweep.py --run RUN [--values 0.3 0.4 0.5 0.6 0.7] [--epochs 5000] [--out DIR]

The same as ``mechgrok sweep frac_train --run RUN``; runs from any directory.

Appendix (opt-in: it trains one run per fraction): the paper's training-fraction sweep. With the
settings of RUN and each training fraction in --values, train (or resume) RUN/frac_train_sweep/frac_train_<f>/
for --epochs epochs, then plot test loss and accuracy per fraction. The paper: 30-50% of the
pairs groks after a delay; 60% or more generalizes at once.

At p=113 each run takes epochs x ~75 ms on one thread of an idle 2-core machine (5 fractions x
5,000 epochs: ~31 min; --threads 2 on an idle machine: ~45 ms per epoch).
Writes RUN/figures/appendix_frac_train_sweep.html and .csv (frac_train, epoch, losses, accuracies).
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["sweep", "frac_train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
