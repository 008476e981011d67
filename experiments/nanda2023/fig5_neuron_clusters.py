"""python experiments/nanda2023/fig5_neuron_clusters.py --run RUN [--rule W_L] [--threshold 0.85] [--out DIR]

The same as ``mechgrok figure fig5_neuron_clusters --run RUN``; runs from any directory.

Fig. 5: histogram of each neuron's fraction of variance explained by its best single frequency
(the 0.85 threshold dashed), and W_L in the Fourier basis (logit axis) for the neurons of the
largest cluster.

Writes RUN/figures/fig5_neuron_clusters.html (interactive; opens offline) and the figure's data,
RUN/figures/fig5_neuron_clusters.csv (one row per neuron) and fig5_neuron_clusters_W_L.csv (neuron, component, value). The logic lives in mechgrok.report.figures.fig5_neuron_clusters.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "fig5_neuron_clusters", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
