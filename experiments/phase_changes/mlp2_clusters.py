"""python experiments/phase_changes/mlp2_clusters.py --run runs/phase-changes [--out DIR]

The same as ``mechgrok figure mlp2_clusters --run runs/phase-changes``; runs from any directory. RUN is
the folder of ``mechgrok reproduce phase-changes`` (docs/phase_changes.md).

Nanda's Alignment Forum post (2022): the 2-layer MLP on onehot(a) + onehot(b): its neuron clusters, one per frequency, and their Fourier spectra.

Writes RUN/figures/mlp2_clusters.html (interactive; opens offline) and the figure's data as CSV. The
logic lives in mechgrok.report.phase_changes.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "mlp2_clusters", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
