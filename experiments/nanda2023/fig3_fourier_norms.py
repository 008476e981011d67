"""python experiments/nanda2023/fig3_fourier_norms.py --run RUN [--rule W_L] [--threshold 0.85] [--out DIR]

The same as ``mechgrok figure fig3_fourier_norms --run RUN``; runs from any directory.

Fig. 3: the norm of each Fourier component (const, cos 1, sin 1, ..., cos K, sin K) of the
embedding W_E (over the residue axis, = row dropped) and of the neuron-logit map W_L = W_out W_U
(over the logit axis c). Key frequencies are drawn in red.

Writes RUN/figures/fig3_fourier_norms.html (interactive; opens offline) and the figure's data,
RUN/figures/fig3_fourier_norms.csv (columns component, W_E, W_L). The logic lives in mechgrok.report.figures.fig3_fourier_norms.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "fig3_fourier_norms", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
