"""python -m experiments.fig3_fourier_norms --run RUN [--rule W_L] [--threshold 0.85] [--out DIR]

Fig. 3: the norm of each Fourier component (const, cos 1, sin 1, ..., cos K, sin K) of the
embedding W_E (over the residue axis, = row dropped) and of the neuron-logit map W_L = W_out W_U
(over the logit axis c). Key frequencies are drawn in red.

Writes RUN/figures/fig3_fourier_norms.html (interactive; opens offline) and the figure's data,
RUN/figures/fig3_fourier_norms.csv (columns component, W_E, W_L). The logic lives in mechgrok.figures.fig3_fourier_norms.
"""

from __future__ import annotations

import sys

from experiments._figure import figure_main


def main(argv: list[str] | None = None) -> int:
    return figure_main("fig3_fourier_norms", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
