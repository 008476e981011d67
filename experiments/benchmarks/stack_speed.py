"""Stacked-training speed: many sparse-parity models per batched step against one model at a time.

    .venv/bin/python experiments/benchmarks/stack_speed.py                       # widths 16 32 64 128 258
    .venv/bin/python experiments/benchmarks/stack_speed.py --widths 16 258 --rounds 2 --epochs 100

The sparse-parity sweep's settings (Pearce et al., docs/training.md): n_bits 30, parity of the
first 3, train sizes 750-1750 (the grid's five, padded to 1750 and masked), test 5000,
metrics every 100 steps, AdamW with L2 weight decay, lr 3e-3, betas (0.99, 0.98), float32
loss, and ``--models`` models per width (train size x weight decay x seed, as in the grid).
In one process at ``--threads`` (default 1), with mechgrok's process settings, rounds
interleave, for each width:

(a) ``train_stack`` with the chunk size it probes (the probe runs once, before the rounds;
    its time is reported and added to the grid estimate);
(b) ``train_stack(chunk_size=1)``: the same code, one model per step;
(c) a plain per-model loop: ``model(tokens)``, cross-entropy, ``torch.optim.AdamW``, the test
    loss every 100 steps, no files.

(a) and (b) write ordinary run folders (checkpoints only at the first and last epoch). It
prints the median milliseconds per model-step of each (process CPU time, the steadier figure on
a shared machine, and wall time), the ratios, the chosen chunk sizes and the extrapolated time
of the whole 1,125-model x 20k-step grid (train sizes {750..1750} x hidden {16..258} x weight
decay {0.01..1} x 9 seeds = 225 models per width).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mechgrok import registry, speed
from mechgrok.config import Config
from mechgrok.tasks.data import run_data
from mechgrok.training.optim import lr_at
from mechgrok.training.stack import probe_chunk_size, train_stack

WIDTHS = (16, 32, 64, 128, 258)
TRAIN_SIZES = (750, 1000, 1250, 1500, 1750)
WEIGHT_DECAYS = (0.01, 0.03, 0.1, 0.3, 1.0)
SEEDS = 9
GRID_STEPS = 20_000
SWEEP = Config(task="parity", family="parity_mlp", n_bits=30, parity_bits=3, n_test=5000, lr=3e-3, beta1=0.99,
               beta2=0.98, decay="l2", loss_dtype="float32", eval_every=100)


def sweep_configs(width: int, n_models: int, epochs: int) -> list[Config]:
    """``n_models`` configs of one width, cycling through the grid's train sizes, decays and seeds."""
    grid = itertools.product(range(SEEDS), WEIGHT_DECAYS, TRAIN_SIZES)
    return [SWEEP.replace(d_mlp=width, seed=seed, weight_decay=wd, n_train=n, epochs=epochs, checkpoint_every=epochs)
            for (seed, wd, n), _ in zip(grid, range(n_models))]


def plain_loop(cfgs: list[Config]) -> tuple[float, float]:
    """(CPU s, wall s) per model-step of each model trained alone with torch.optim.AdamW."""
    cpu, wall, steps = 0.0, 0.0, 0
    for cfg in cfgs:
        data = run_data(cfg)
        x, y = data.tokens[data.split.train], data.labels[data.split.train]
        test_x, test_y = data.tokens[data.split.test], data.labels[data.split.test]
        model = registry.family(cfg.family).build(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        c0, w0 = time.process_time(), time.perf_counter()
        for epoch in range(cfg.epochs):
            loss = torch.nn.functional.cross_entropy(model(x)[:, -1], y)
            optimizer.zero_grad()
            loss.backward()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, epoch)
            optimizer.step()
            if epoch % cfg.eval_every == 0:
                with torch.no_grad():
                    torch.nn.functional.cross_entropy(model(test_x)[:, -1], test_y)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        steps += cfg.epochs
    return cpu / steps, wall / steps


def stacked(cfgs: list[Config], chunk_size: int) -> tuple[float, float]:
    """(CPU s, wall s) per model-step of train_stack at ``chunk_size``, into fresh run folders."""
    with tempfile.TemporaryDirectory() as tmp:
        c0, w0 = time.process_time(), time.perf_counter()
        train_stack(cfgs, [Path(tmp) / f"run{i}" for i in range(len(cfgs))], chunk_size=chunk_size, tune_process=False)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    steps = sum(c.epochs for c in cfgs)
    return cpu / steps, wall / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    parser.add_argument("--models", type=int, default=25, help="models per width (default 25: one seed's grid)")
    parser.add_argument("--epochs", type=int, default=200, help="steps per model per round (default 200)")
    parser.add_argument("--plain-models", type=int, default=5, help="models per round of the plain loop (c)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median over them)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    with speed.torch_threads(args.threads) as threads, speed.tuned_malloc() as malloc, \
            speed.fast_float32_matmul() as fast_matmul:
        print(f"torch {torch.__version__}, {threads} thread(s), oneDNN float32 GEMMs {fast_matmul}, tuned malloc {malloc}; "
              f"{args.models} models x {args.epochs} steps per width and round, {args.rounds} rounds", flush=True)
        return run(args)


def run(args: argparse.Namespace) -> int:
    table = []
    for width in args.widths:
        cfgs = sweep_configs(width, args.models, args.epochs)
        grid_cfgs = sweep_configs(width, len(TRAIN_SIZES) * len(WEIGHT_DECAYS) * SEEDS, args.epochs)
        t0 = time.perf_counter()
        chunk = probe_chunk_size(cfgs)
        probe_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        grid_chunk = probe_chunk_size(grid_cfgs)  # what the real sweep's stack of 225 would choose
        grid_probe_s = time.perf_counter() - t0
        stacked(cfgs[:2], chunk)  # warm-up: allocator growth, kernel selection
        times: dict[str, list[tuple[float, float]]] = {"a": [], "b": [], "c": []}
        for r in range(args.rounds):
            times["a"].append(stacked(cfgs, chunk))
            times["b"].append(stacked(cfgs, 1))
            times["c"].append(plain_loop(cfgs[r * args.plain_models % len(cfgs):][:args.plain_models]))
            print(f"  hidden {width:>3} round {r + 1}: " + "  ".join(
                f"({k}) {v[-1][0] * 1e3:.3f} ms" for k, v in times.items()), flush=True)
        cpu = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
        wall = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
        table.append((width, chunk, probe_s, grid_chunk, grid_probe_s, cpu, wall))

    print()
    print("ms per model-step (median over rounds; CPU time, wall time in brackets)")
    print(f"{'hidden':>6} {'chunk':>5} {'(a) stacked':>18} {'(b) chunk 1':>18} {'(c) plain loop':>18} "
          f"{'(b)/(a)':>7} {'(c)/(a)':>7}  probe s   grid chunk (probe s)")
    grid = {"a": 0.0, "b": 0.0, "c": 0.0}
    models_per_width = len(TRAIN_SIZES) * len(WEIGHT_DECAYS) * SEEDS
    for width, chunk, probe_s, grid_chunk, grid_probe_s, cpu, wall in table:
        cells = "".join(f" {cpu[k] * 1e3:8.3f} ({wall[k] * 1e3:7.3f})" for k in "abc")
        print(f"{width:>6} {chunk:>5}{cells} {cpu['b'] / cpu['a']:7.2f} {cpu['c'] / cpu['a']:7.2f}  {probe_s:7.1f}"
              f"   {grid_chunk:>4} ({grid_probe_s:.1f})")
        for k in "abc":
            grid[k] += models_per_width * GRID_STEPS * cpu[k]
        grid["a"] += grid_probe_s
    slowest = min(min(cpu["b"], cpu["c"]) / cpu["a"] for *_, cpu, _ in table)
    print()
    print(f"the {models_per_width * len(table)}-model x {GRID_STEPS}-step grid over these widths, one core (CPU time): "
          f"(a) {grid['a'] / 3600:.2f} h, (b) {grid['b'] / 3600:.2f} h, (c) {grid['c'] / 3600:.2f} h; "
          f"(b)/(a) {grid['b'] / grid['a']:.2f}, (c)/(a) {grid['c'] / grid['a']:.2f} (target >= 1.5)")
    print(f"slowest width: sequential / stacked = {slowest:.2f} (target >= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
