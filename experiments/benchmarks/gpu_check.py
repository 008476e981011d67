"""GPU check: ms per epoch of one seed and of many seeds at once, and 64 seeds' time to epoch 15k.

    .venv/bin/python experiments/benchmarks/gpu_check.py --out runs/gpu_check                 # on a CUDA machine
    .venv/bin/python experiments/benchmarks/gpu_check.py --out /tmp/gpu --device cpu --seeds 2 --epochs 20   # smoke

The paper's config (p=113 by default, 30% train, full batch, float64 loss), float32 GEMMs exact
(TF32 off, ``mechgrok.training.stack.matmul_precision``). Three figures, each from a real
training call into run folders under ``--out`` (metrics rows, checkpoints and files included):

1. **One seed**: ``mechgrok.train(cfg, device=...)`` if the trainer takes that device for the
   transformer, else a stack of one model (``train_stack``); ``one_seed.how`` says which.
2. **``--seeds`` seeds at once**: ``train_stack`` with every seed in one batched step.
3. **Time to ``--target-epoch`` (15,000)**: ms per epoch of (2) times the epochs,
   **extrapolated** from the ``--epochs`` measured (labelled so in the JSON); warm-up (the
   first eval interval: CUDA start-up, cuBLAS handles) is left out of the rate.

Before timing, ``exactness`` compares the stacked logits of two seeds on the device with the
single-model fast path on the CPU (float32 everywhere; TF32 would show as ~1e-3). Everything
goes to ``OUT/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

import mechgrok
from mechgrok import registry, runs
from mechgrok.config import Config
from mechgrok.models.fastpath import FastPath
from mechgrok.models.stacked_fastpath import StackedFastPath
from mechgrok.scoring import loss_dtype
from mechgrok.tasks.data import run_data
from mechgrok.training.stack import matmul_precision, resolve_device, train_stack

TARGET_S = 300.0  # issue target: 64 seeds to epoch 15k in <= 5 minutes on a GPU
RESULT_FILE = "gpu_check.json"


def ms_per_epoch(metrics, warmup_epoch: int) -> float:
    """The wall time per epoch between the metrics row at ``warmup_epoch`` and the last row."""
    rows = metrics.set_index("epoch")
    last = int(rows.index.max())
    if last <= warmup_epoch:
        raise ValueError(f"no epochs after the warm-up ({warmup_epoch}); pass more --epochs")
    return 1000 * (float(rows.elapsed_s[last]) - float(rows.elapsed_s[warmup_epoch])) / (last - warmup_epoch)


def exactness(cfg: Config, device: torch.device) -> dict:
    """Max |stacked logits on ``device`` - FastPath logits on the CPU| / max |logits|, two seeds, at init."""
    family = registry.family(cfg.family)
    cfgs = [cfg.replace(seed=s) for s in (0, 1)]
    models = [family.build(c) for c in cfgs]
    data = [run_data(c) for c in cfgs]
    n = min(len(d.split.train) for d in data)
    tokens = torch.stack([d.tokens[d.split.train[:n]] for d in data]).to(device)
    labels = torch.stack([d.labels[d.split.train[:n]] for d in data]).to(device)
    rows = SimpleNamespace(inputs=tokens, labels=labels, mask=torch.ones(2, n, dtype=torch.float64, device=device),
                           count=torch.full((2,), float(n), dtype=torch.float64, device=device), cache={})
    weights = {name: torch.stack([m.get_parameter(name).detach() for m in models]).to(device)
               for name, _ in models[0].named_parameters()}
    step = StackedFastPath(models[0], loss_dtype(cfg.loss_dtype), 1)
    with torch.no_grad(), matmul_precision(device, False):
        stacked = step.logits(weights, rows).cpu()
    worst = 0.0
    for i, (m, d) in enumerate(zip(models, data)):
        ref = FastPath(d.tokens[d.split.train[:n]], d.labels[d.split.train[:n]]).logits(m)
        worst = max(worst, float((stacked[i] - ref).abs().max() / ref.abs().max()))
    return {"max_relative_logit_difference": worst, "within_1e-5": worst <= 1e-5,
            "tf32_allowed_outside_training": bool(torch.backends.cuda.matmul.allow_tf32)}


def time_one_seed(cfg: Config, out: Path, device: torch.device, warmup: int) -> dict:
    try:
        result = mechgrok.train(cfg, out / "one_seed", device=str(device))
        how = "mechgrok.train"
    except ValueError as err:  # the transformer's single-model trainer does not run on this device
        if "device" not in str(err):
            raise
        (result,) = train_stack([cfg], [out / "one_seed_stack"], device=device, chunk_size=1)
        how = f"train_stack with 1 model (mechgrok.train refused device {device}: {err})"
    return {"how": how, "epochs": cfg.epochs, "ms_per_epoch": ms_per_epoch(result.metrics, warmup),
            "final_train_loss": float(result.metrics.train_loss.iloc[-1])}


def time_stack(cfg: Config, seeds: int, out: Path, device: torch.device, warmup: int) -> dict:
    cfgs = [cfg.replace(seed=cfg.seed + i) for i in range(seeds)]
    t0 = time.perf_counter()
    results = train_stack(cfgs, [out / "stack" / f"seed_{c.seed}" for c in cfgs], device=device, chunk_size=seeds)
    wall = time.perf_counter() - t0
    rate = ms_per_epoch(results[0].metrics, warmup)
    finals = [float(r.metrics.train_loss.iloc[-1]) for r in results]
    return {"seeds": seeds, "epochs": cfg.epochs, "ms_per_epoch_all_seeds": rate, "ms_per_seed_epoch": rate / seeds,
            "wall_s_including_setup_and_files": wall, "final_train_loss_min": min(finals),
            "final_train_loss_max": max(finals)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the run folders and gpu_check.json")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a quick smoke test)")
    parser.add_argument("--seeds", type=int, default=64, help="seeds at once in the stack (default: 64)")
    parser.add_argument("--epochs", type=int, default=500, help="epochs measured per call (default: 500)")
    parser.add_argument("--target-epoch", type=int, default=15_000, help="the epoch to extrapolate to (default: 15000)")
    parser.add_argument("--p", type=int, default=113, help="the modulus (default: 113, the paper's)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.epochs < 2:
        print("--seeds must be >= 1 and --epochs >= 2", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    out = Path(args.out)
    eval_every = max(1, args.epochs // 5)
    cfg = Config(p=args.p, epochs=args.epochs, eval_every=eval_every, checkpoint_every=args.epochs)
    report: dict = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "config": cfg.to_dict(),
        "timing": f"ms per epoch from the metrics rows' elapsed_s between epoch {eval_every} (after a warm-up "
                  f"interval) and epoch {args.epochs}, evals every {eval_every} epochs included",
    }
    report["exactness"] = exactness(cfg, device)
    report["one_seed"] = time_one_seed(cfg, out, device, eval_every)
    stacked = time_stack(cfg, args.seeds, out, device, eval_every)
    report["stack"] = stacked
    to_target = stacked["ms_per_epoch_all_seeds"] * args.target_epoch / 1000
    report["to_target_epoch"] = {
        "seeds": args.seeds, "epoch": args.target_epoch, "seconds": to_target,
        "label": f"extrapolated: {args.epochs} measured epochs' rate x {args.target_epoch} epochs (not run to the end)",
        "target_s_for_64_seeds": TARGET_S, "meets_target": bool(args.seeds >= 64 and to_target <= TARGET_S),
    }
    report["speedup_per_seed_vs_one_seed"] = report["one_seed"]["ms_per_epoch"] / stacked["ms_per_seed_epoch"]
    runs.atomic_write_text(out / RESULT_FILE, json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("exactness", "one_seed", "stack", "to_target_epoch")}, indent=2))
    print(f"wrote {out / RESULT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
