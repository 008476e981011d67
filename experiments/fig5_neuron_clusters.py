"""python -m experiments.fig5_neuron_clusters --run RUN [--rule W_L] [--threshold 0.85] [--out DIR]

Fig. 5: histogram of each neuron's fraction of variance explained by its best single frequency
(the 0.85 threshold dashed), and W_L in the Fourier basis (logit axis) for the neurons of the
largest cluster.

Writes RUN/figures/fig5_neuron_clusters.html (interactive; opens offline) and the figure's data,
RUN/figures/fig5_neuron_clusters.csv (one row per neuron) and fig5_neuron_clusters_W_L.csv (neuron, component, value). The logic lives in mechgrok.figures.fig5_neuron_clusters.
"""

from __future__ import annotations

import sys

from experiments._figure import figure_main


def main(argv: list[str] | None = None) -> int:
    return figure_main("fig5_neuron_clusters", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
