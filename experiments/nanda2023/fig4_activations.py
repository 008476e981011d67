"""python experiments/nanda2023/fig4_activations.py --run RUN [--rule W_L] [--threshold 0.85] [--out DIR]

The same as ``mechgrok figure fig4_activations --run RUN``; runs from any directory.

Fig. 4: attention from = to a for every head over the input grid (a, b); the activations of
the first neuron of the two largest frequency clusters over (a, b); and the norm over c of every
2D Fourier component of the logits (component of a x component of b).

Writes RUN/figures/fig4_activations.html (interactive; opens offline) and the figure's data,
RUN/figures/fig4_activations.csv (long form: panel, row, col, value). The logic lives in mechgrok.report.figures.fig4_activations.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "fig4_activations", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
