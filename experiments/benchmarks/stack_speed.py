"""Stacked-training speed: many sparse-parity models per batched step against one model at a time.

    .venv/bin/python experiments/benchmarks/stack_speed.py                       # widths 16 32 64 128 258
    .venv/bin/python experiments/benchmarks/stack_speed.py --widths 16 258 --rounds 2 --epochs 100

The sparse-parity sweep's settings (Pearce et al., docs/training.md): n_bits 30, parity of the
first 3, train sizes 750-1750 (the grid's five, padded to 1750 and masked), test 5000,
metrics every 100 steps, AdamW with L2 weight decay, lr 3e-3, betas (0.99, 0.98), float32
loss, and ``--models`` models per width (train size x weight decay x seed, as in the grid).
In one process at ``--threads`` (default 1), with mechgrok's process settings, rounds
interleave, for each width:

(a) ``train_stack`` at the chunk size it probes for the grid's stack of 225 models of that
    width (the probe runs once, before the rounds; its time is added to the grid estimate);
(b) ``train_stack(chunk_size=1)``: the same code, one model per step;
(c) a plain per-model loop: ``model(tokens)``, cross-entropy, ``torch.optim.AdamW``, the test
    loss every 100 steps, no files.

(a) and (b) write ordinary run folders (checkpoints only at the first and last epoch). A model-step
is timed in the steady state, from the first metrics row of epoch 100 to that of the last epoch
(so it includes the test-set evaluation every 100 steps); what each model costs besides (data,
model, run folder, files) is reported apart as a fixed cost. It prints the median of each over
the rounds (process CPU time, the steadier figure on a shared machine, and wall time), the
ratios, the chosen chunk sizes and the extrapolated time of the whole 1,125-model x 20k-step
grid (train sizes {750..1750} x hidden {16..258} x weight decay {0.01..1} x 9 seeds = 225
models per width): 225 x (20,000 x step + fixed) per width, plus the probe.
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


def stacked(cfgs: list[Config], chunk_size: int) -> tuple[float, float, float, float]:
    """(CPU s, wall s) per model-step of train_stack at ``chunk_size`` in the steady state, and
    (CPU s, wall s) per model of everything else, into fresh run folders."""
    marks: dict[int, tuple[float, float]] = {}

    def on_eval(row: dict) -> None:
        marks.setdefault(row["epoch"], (time.process_time(), time.perf_counter()))

    epochs, every = cfgs[0].epochs, cfgs[0].eval_every
    with tempfile.TemporaryDirectory() as tmp:
        c0, w0 = time.process_time(), time.perf_counter()
        train_stack(cfgs, [Path(tmp) / f"run{i}" for i in range(len(cfgs))], chunk_size=chunk_size, tune_process=False,
                    on_eval=on_eval)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    model_steps = len(cfgs) * (epochs - every)
    step_cpu = (marks[epochs][0] - marks[every][0]) / model_steps
    step_wall = (marks[epochs][1] - marks[every][1]) / model_steps
    n = len(cfgs)
    return step_cpu, step_wall, (cpu - step_cpu * n * epochs) / n, (wall - step_wall * n * epochs) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    parser.add_argument("--models", type=int, default=32, help="models per width (default 32)")
    parser.add_argument("--epochs", type=int, default=300, help="steps per model per round (default 300; > 100)")
    parser.add_argument("--plain-models", type=int, default=5, help="models per round of the plain loop (c)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median over them)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.epochs <= SWEEP.eval_every:
        parser.error(f"--epochs must be > {SWEEP.eval_every} (the steady state is timed from epoch {SWEEP.eval_every})")
    with speed.torch_threads(args.threads) as threads, speed.tuned_malloc() as malloc, \
            speed.fast_float32_matmul() as fast_matmul:
        print(f"torch {torch.__version__}, {threads} thread(s), oneDNN float32 GEMMs {fast_matmul}, tuned malloc {malloc}; "
              f"{args.models} models x {args.epochs} steps per width and round, {args.rounds} rounds", flush=True)
        return run(args)


def run(args: argparse.Namespace) -> int:
    models_per_width = len(TRAIN_SIZES) * len(WEIGHT_DECAYS) * SEEDS
    table = []
    for width in args.widths:
        cfgs = sweep_configs(width, args.models, args.epochs)
        t0 = time.perf_counter()
        chunk = probe_chunk_size(sweep_configs(width, models_per_width, args.epochs))  # what the sweep's stack uses
        probe_s = time.perf_counter() - t0
        stacked(cfgs[:2], min(chunk, 2))  # warm-up: allocator growth, kernel selection
        times: dict[str, list[tuple[float, ...]]] = {"a": [], "b": [], "c": []}
        for r in range(args.rounds):
            times["a"].append(stacked(cfgs, chunk))
            times["b"].append(stacked(cfgs, 1))
            times["c"].append(plain_loop(cfgs[r * args.plain_models % len(cfgs):][:args.plain_models]))
            print(f"  hidden {width:>3} round {r + 1}: " + "  ".join(
                f"({k}) {v[-1][0] * 1e3:.3f} ms" for k, v in times.items()), flush=True)
        med = {k: [statistics.median(t[i] for t in v) for i in range(len(v[0]))] for k, v in times.items()}
        table.append((width, chunk, probe_s, med))

    print()
    print("ms per model-step, steady state (median over rounds; CPU time, wall time in brackets); "
          "fixed: CPU s per model besides the steps")
    print(f"{'hidden':>6} {'chunk':>5} {'(a) stacked':>18} {'(b) chunk 1':>18} {'(c) plain loop':>18} "
          f"{'(b)/(a)':>7} {'(c)/(a)':>7} {'fixed (a)':>9} {'fixed (b)':>9} {'probe s':>7}")
    grid = {"a": 0.0, "b": 0.0, "c": 0.0}
    for width, chunk, probe_s, med in table:
        cells = "".join(f" {med[k][0] * 1e3:8.3f} ({med[k][1] * 1e3:7.3f})" for k in "abc")
        print(f"{width:>6} {chunk:>5}{cells} {med['b'][0] / med['a'][0]:7.2f} {med['c'][0] / med['a'][0]:7.2f}"
              f" {med['a'][2]:9.3f} {med['b'][2]:9.3f} {probe_s:7.1f}")
        grid["a"] += models_per_width * (GRID_STEPS * med["a"][0] + med["a"][2]) + probe_s
        grid["b"] += models_per_width * (GRID_STEPS * med["b"][0] + med["b"][2])
        grid["c"] += models_per_width * GRID_STEPS * med["c"][0]
    slowest = min(min(med["b"][0], med["c"][0]) / med["a"][0] for *_, med in table)
    print()
    print(f"the {models_per_width * len(table)}-model x {GRID_STEPS}-step grid over these widths, one core (CPU time): "
          f"(a) {grid['a'] / 3600:.2f} h, (b) {grid['b'] / 3600:.2f} h, (c) {grid['c'] / 3600:.2f} h (steps only); "
          f"(b)/(a) {grid['b'] / grid['a']:.2f}, (c)/(a) {grid['c'] / grid['a']:.2f} (target >= 1.5)")
    print(f"slowest width: sequential / stacked = {slowest:.2f} (target >= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
