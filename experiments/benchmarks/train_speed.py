"""Training speed: mechgrok's trainer against a plain HookedTransformer loop, side by side.

    .venv/bin/python experiments/benchmarks/train_speed.py                 # p=113, the paper's settings
    .venv/bin/python experiments/benchmarks/train_speed.py --full-run      # also a whole run to 15k epochs
    .venv/bin/python experiments/benchmarks/train_speed.py --threads 2     # on 2 torch threads

In one process, with the same torch settings (``--threads``, default
``mechgrok.speed.default_threads()``; oneDNN float32 GEMMs and tuned malloc unless ``--no-tune``),
rounds interleave three loops:

(a) a plain ``HookedTransformer`` loop in the style of the TransformerLens grokking demo:
    forward on all positions, float64 cross-entropy at the last one, AdamW, and a test-set
    loss every epoch;
(b) the same loop without the per-epoch test loss;
(c) ``mechgrok.train`` itself (fast exact step, test evaluation every ``eval_every`` epochs,
    checkpoints and metrics written as usual) on a fresh run folder.

It prints the median milliseconds per epoch of each and the ratios (a)/(c) and (b)/(c).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mechgrok import speed
from mechgrok.config import Config
from mechgrok.models.transformer import build_model
from mechgrok.tasks.modular import ModularTask, make_split
from mechgrok.training.loop import train
from mechgrok.training.optim import lr_at, make_optimizer


def plain_loop(cfg: Config, epochs: int, test_every_epoch: bool) -> float:
    """Seconds per epoch of a plain HookedTransformer training loop."""
    task = ModularTask(cfg.p, cfg.op)
    split = make_split(task.n_pairs, cfg.frac_train, cfg.seed)
    model = build_model(cfg, split=split)
    optimizer = make_optimizer(model, cfg)
    tokens, labels = task.tokens(), task.labels()
    train_x, train_y = tokens[split.train], labels[split.train]
    test_x, test_y = tokens[split.test], labels[split.test]
    start = time.perf_counter()
    for epoch in range(epochs):
        logits = model(train_x)[:, -1]
        loss = torch.nn.functional.cross_entropy(logits.double(), train_y)
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if test_every_epoch:
            with torch.no_grad():
                test_logits = model(test_x)[:, -1]
                torch.nn.functional.cross_entropy(test_logits.double(), test_y)
    return (time.perf_counter() - start) / epochs


def mechgrok_loop(cfg: Config, epochs: int) -> float:
    # tune_process=False: main() already applied (or declined) the same settings for all three loops
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg.replace(epochs=epochs), Path(tmp) / "run", tune_process=False)
    return result.elapsed_s / epochs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=int, default=113)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median over them)")
    parser.add_argument("--plain-epochs", type=int, default=20, help="epochs per round of loops (a) and (b)")
    parser.add_argument("--mechgrok-epochs", type=int, default=200, help="epochs per round of loop (c)")
    parser.add_argument("--no-tune", action="store_true", help="leave torch's matmul precision and malloc as they are")
    parser.add_argument("--full-run", action="store_true", help="also time a whole run to --full-epochs")
    parser.add_argument("--full-epochs", type=int, default=15_000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: mechgrok's default)")
    args = parser.parse_args()

    tune = not args.no_tune
    with speed.torch_threads(args.threads) as threads, speed.tuned_malloc(tune) as malloc, \
            speed.fast_float32_matmul(tune) as fast_matmul:
        settings = {"fast_float32_matmul": fast_matmul, "malloc": malloc}
        return run(args, threads, settings)


def run(args: argparse.Namespace, threads: int, settings: dict) -> int:
    cfg = Config(p=args.p)
    print(f"torch {torch.__version__}, {threads} threads, settings {settings}, p={cfg.p}, "
          f"{int(cfg.frac_train * cfg.p**2)} train pairs, eval_every={cfg.eval_every}")
    # warm-up: first calls pay for allocator growth and kernel selection
    plain_loop(cfg, 3, True)
    mechgrok_loop(cfg, 20)
    times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    for r in range(args.rounds):
        times["a"].append(plain_loop(cfg, args.plain_epochs, test_every_epoch=True))
        times["b"].append(plain_loop(cfg, args.plain_epochs, test_every_epoch=False))
        times["c"].append(mechgrok_loop(cfg, args.mechgrok_epochs))
        print(f"round {r + 1}: " + "  ".join(f"({k}) {v[-1] * 1e3:.1f} ms" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    print(f"(a) HookedTransformer loop + test loss every epoch   {med['a'] * 1e3:7.1f} ms/epoch")
    print(f"(b) HookedTransformer loop                           {med['b'] * 1e3:7.1f} ms/epoch")
    print(f"(c) mechgrok.train (eval every {cfg.eval_every:>3} epochs)           {med['c'] * 1e3:7.1f} ms/epoch")
    print(f"ratio (a)/(c) = {med['a'] / med['c']:.2f}   (target >= 8)")
    print(f"ratio (b)/(c) = {med['b'] / med['c']:.2f}   (target >= 3.5)")

    if args.full_run:
        with tempfile.TemporaryDirectory() as tmp:
            result = train(cfg.replace(epochs=args.full_epochs), Path(tmp) / "run", tune_process=False)
        last = result.metrics.iloc[-1]
        grokked = result.metrics[result.metrics.test_acc >= 0.99].epoch
        print(f"full run to epoch {args.full_epochs}: {result.elapsed_s / 60:.2f} min, "
              f"final test accuracy {last.test_acc:.4f}, test loss {last.test_loss:.3e}, "
              f"test accuracy >= 0.99 from epoch {int(grokked.min()) if len(grokked) else 'never'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
