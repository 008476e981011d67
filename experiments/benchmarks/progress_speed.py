"""Progress-measure speed: every measure at 400 checkpoints of a p=113 run (target: <= 60 s).

    .venv/bin/python benchmarks/progress_speed.py                       # runs/mainline, 400 checkpoints
    .venv/bin/python benchmarks/progress_speed.py --run runs/p113 --threads 1

It times ``mechgrok.analysis.progress.compute_measures`` (FastPath logits on all p² inputs, the batched
restricted/excluded projections, per-frequency excluded losses, Gini, weight norms and cos
coefficients) on ``--n`` checkpoints of the run, cycling through its saved epochs when it has
fewer. The key frequencies are found first (on the final checkpoint) and timed separately.
It prints wall time, process CPU time, and milliseconds per checkpoint. On a machine that other
jobs share, CPU time per thread is the steadier figure: wall time also counts waiting for a core.
``--compare-flush`` then times the last ``--n`` checkpoints again with subnormals flushed to zero
and without, interleaved (late checkpoints hold the most subnormal weights).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

from mechgrok.analysis import progress
from mechgrok import runs

TARGET_S = 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/mainline", help="a p=113 run folder (default: runs/mainline)")
    parser.add_argument("--n", type=int, default=400, help="checkpoints to measure (default: 400)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--compare-flush", action="store_true", help="also time the late checkpoints with and without flushing")
    args = parser.parse_args(argv)
    run = Path(args.run)
    saved = runs.checkpoint_epochs(run)
    if not saved:
        print(f"no checkpoints in {run}; train one with `mechgrok reproduce` or `mechgrok train --out {run}`", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    epochs = list(itertools.islice(itertools.cycle(saved), args.n))
    cfg = runs.read_config(run)

    t0 = time.perf_counter()
    key = progress.final_key_frequencies(run)
    key_s = time.perf_counter() - t0

    wall0, cpu0 = time.perf_counter(), time.process_time()
    table, _ = progress.compute_measures(run, key, epochs=epochs)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0

    print(f"run {run}: p={cfg.p}, {len(saved)} saved checkpoints, key frequencies {key} (found in {key_s:.1f} s)")
    print(f"torch threads {torch.get_num_threads()}; {len(table)} checkpoints x {table.shape[1] - 1} measures")
    print(f"wall {wall:.1f} s ({1000 * wall / len(epochs):.0f} ms per checkpoint); process CPU {cpu:.1f} s")
    verdict = "meets" if wall <= TARGET_S else "misses"
    print(f"{verdict} the target of {TARGET_S:.0f} s for {args.n} checkpoints")
    if args.compare_flush:
        late = saved[-min(len(saved), 20):]
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(3):
            for flush in (True, False):
                c0 = time.process_time()
                progress.compute_measures(run, key, epochs=late, flush_denormals=flush)
                times[flush].append((time.process_time() - c0) / len(late))
        med = {flush: sorted(v)[1] for flush, v in times.items()}
        print(f"last {len(late)} checkpoints, CPU ms per checkpoint (median of 3): flushed {1000 * med[True]:.1f}, "
              f"not flushed {1000 * med[False]:.1f} ({med[False] / med[True]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
