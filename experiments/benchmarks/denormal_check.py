"""Does flushing subnormal floats to zero change any result? The same seeds trained both ways.

    .venv/bin/python experiments/benchmarks/denormal_check.py                     # p=31, 5 seeds
    .venv/bin/python experiments/benchmarks/denormal_check.py --p 53 --frac-train 0.5 --epochs 4000

Each seed is trained twice with the same settings (one thread, oneDNN float32 GEMMs, tuned
malloc), once inside ``mechgrok.speed.flushed_denormals()`` and once without it, into
``--out/<flushed|plain>/seed_<s>``. It reports, per seed and arm: the epoch test accuracy
first reaches 0.99, the final train and test losses, and how many subnormal values the final
weights and Adam moments of the plain run hold (what flushing had to act on); then, for every
progress measure at the final checkpoint, the largest difference between the arms beside the
spread of that measure across seeds. With ``--json`` it writes every figure to a file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from mechgrok import runs, speed
from mechgrok.analysis import progress
from mechgrok.config import Config
from mechgrok.training.loop import train


def subnormal_count(run: Path) -> int:
    """Subnormal float32 values in a run's final weights and optimizer state."""
    ckpt = runs.read_checkpoint_file(run / runs.RESUME_FILE)
    tiny = torch.finfo(torch.float32).tiny
    tensors = list(ckpt.model_state.values()) + list(ckpt.optimizer_state.values())
    return int(sum(((t != 0) & (t.abs() < tiny)).sum() for t in tensors if t.dtype == torch.float32))


def train_arm(cfg: Config, run: Path, flushed: bool):
    with speed.torch_threads(1), speed.tuned_malloc(), speed.fast_float32_matmul(), speed.flushed_denormals(flushed) as applied:
        if flushed and not applied:
            raise SystemExit("this machine cannot flush subnormals on every thread; nothing to compare")
        return train(cfg, run, tune_process=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=int, default=31)
    parser.add_argument("--frac-train", type=float, default=0.7)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--d-mlp", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/denormal-check"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    base = Config(p=args.p, frac_train=args.frac_train, lr=args.lr, d_model=args.d_model, d_mlp=args.d_mlp,
                  epochs=args.epochs, checkpoint_every=max(100, args.epochs // 30))
    rows, finals = [], {"flushed": {}, "plain": {}}
    for seed in range(args.seeds):
        cfg = base.replace(seed=seed)
        for arm in ("flushed", "plain"):
            run = args.out / arm / f"seed_{seed}"
            result = train_arm(cfg, run, arm == "flushed")
            m = result.metrics
            grokked = m[m.test_acc >= 0.99].epoch
            measures = progress.compute_measures(run, epochs=[runs.checkpoint_epochs(run)[-1]])[0].iloc[-1]
            finals[arm][seed] = measures
            rows.append({"seed": seed, "arm": arm, "grok_epoch": int(grokked.min()) if len(grokked) else None,
                         "final_train_loss": float(m.train_loss.iloc[-1]), "final_test_loss": float(m.test_loss.iloc[-1]),
                         "subnormals_at_end": subnormal_count(run)})
            print(json.dumps(rows[-1]), flush=True)
    compare = {}
    # the measures every run has (the per-frequency columns follow each run's own key frequencies)
    common = set.intersection(*(set(finals[arm][s].index) for arm in finals for s in range(args.seeds))) - {"epoch"}
    for name in sorted(common):
        diffs = [abs(float(finals["flushed"][s][name]) - float(finals["plain"][s][name])) for s in range(args.seeds)]
        spread = statistics.pstdev(float(finals["plain"][s][name]) for s in range(args.seeds)) if args.seeds > 1 else float("nan")
        compare[name] = {"max_abs_diff_between_arms": max(diffs), "seed_spread_std": spread}
    print()
    print(f"{'measure':<28} {'max |flushed - plain|':>22} {'std over seeds':>16}")
    for name, c in compare.items():
        print(f"{name:<28} {c['max_abs_diff_between_arms']:>22.3e} {c['seed_spread_std']:>16.3e}")
    if args.json is not None:
        args.json.write_text(json.dumps({"config": base.to_dict(), "runs": rows, "final_measures": compare}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
