"""python experiments/nanda2023/appendix_weight_decay_sweep.py --run RUN [--values 0.3 1 3] [--epochs 5000] [--out DIR]

The same as ``mechgrok sweep weight_decay --run RUN``; runs from any directory.

Appendix (opt-in: it trains one run per value): weight-decay effects. With the settings of RUN
and each AdamW weight decay in --values, train (or resume)
RUN/weight_decay_sweep/weight_decay_<v>/ for --epochs epochs, then plot test loss and accuracy
per value. Weight decay drives circuit formation and cleanup: with less of it, grokking comes
later or not at all.

At p=113 each run takes epochs x ~75 ms on one thread of an idle 2-core machine (3 values x
5,000 epochs: ~19 min; --threads 2 on an idle machine: ~45 ms per epoch).
Writes RUN/figures/appendix_weight_decay_sweep.html and .csv (weight_decay, epoch, losses, accuracies).
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["sweep", "weight_decay", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
