"""python experiments/pair2023/neuron_waves.py --run runs/pair2023 [--out DIR]

The same as ``mechgrok figure neuron_waves --run runs/pair2023``; runs from any directory. RUN is the
folder of ``mechgrok reproduce pair2023`` (docs/pair2023.md).

Pearce et al. (PAIR 2023): the neurons grouped by their frequency at the end of training, each neuron's input weights over the residues 0..66 as a wave.

Writes RUN/figures/neuron_waves.html (interactive; opens offline) and the figure's data as CSV. The
logic lives in mechgrok.report.pair2023.neuron_waves.
"""

from __future__ import annotations

import sys

from mechgrok.cli import main as mechgrok_main


def main(argv: list[str] | None = None) -> int:
    return mechgrok_main(["figure", "neuron_waves", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
