"""python experiments/nanda2023/fig6_frequency_ablation.py --run RUN [--rule W_L] [--threshold 0.85] [--out DIR]

The same as ``mechgrok figure fig6_frequency_ablation --run RUN``; runs from any directory.

Fig. 6: the loss on all p² inputs when the cos/sin(w_k(a+b)) directions of one frequency k are
removed from the logits, for every k, beside the restricted loss (only the key frequencies kept)
and the model's own loss.

Writes RUN/figures/fig6_frequency_ablation.html (interactive; opens offline) and the figure's data,
RUN/figures/fig6_frequency_ablation.csv (frequency, key, loss_all, loss_train, loss_test, restricted_loss, original_loss). The logic lives in mechgrok.report.figures.fig6_frequency_ablation.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "fig6_frequency_ablation", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
