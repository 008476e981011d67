"""Training speed: mechgrok's trainer against the TransformerLens-demo loop, side by side.

    .venv/bin/python experiments/benchmarks/train_speed.py                      # early steps, p=113
    .venv/bin/python experiments/benchmarks/train_speed.py --late runs/mainline # also late steps
    .venv/bin/python experiments/benchmarks/train_speed.py --full-run           # also a 20k-epoch run
    .venv/bin/python experiments/benchmarks/train_speed.py --threads 2 --json out.json

In one process, with the same torch settings (``--threads``, default
``mechgrok.speed.default_threads()``; oneDNN float32 GEMMs, tuned malloc and subnormals flushed
to zero unless ``--no-tune``), rounds interleave four loops from the same initialisation:

(a) the TransformerLens grokking demo's loop as users run it: ``HookedTransformer`` forward on
    all positions, float64 cross-entropy at the last one, AdamW, and the test loss every epoch;
(b) the same loop without the per-epoch test loss;
(c) ``mechgrok.train`` with its defaults (the fast exact step, test evaluation every
    ``eval_every`` epochs, checkpoints and metrics written) into a fresh run folder, timed in its
    steady state (its metrics' elapsed time from epoch 50 to the last), the way a long run spends it;
(d) the bare fast step (``FastPath.loss_and_grad`` and ``AdamW.step``), against its FLOP floor:
    the GEMMs that no formulation avoids (W_out's and W_U's forward, weight gradient and input
    gradient over the train batch), timed on their own, and their FLOPs at the GEMM rate this
    machine measures on a 1024³ product.

``--late RUN`` also times steps late in training, resumed from ``RUN``'s resume file (a run
that has grokked, e.g. a finished ``mechgrok train`` run): the bare step with subnormals flushed
and without, interleaved, because weight decay drives many weights, gradients and Adam moments
into float32's subnormal range there, which is slow on some CPUs.

It prints the medians and ratios, and with ``--json`` writes every figure to a file.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mechgrok import runs, speed
from mechgrok.config import Config
from mechgrok.models.fastpath import FastPath
from mechgrok.models.transformer import build_model
from mechgrok.tasks.base import make_split
from mechgrok.tasks.modular import ModularTask
from mechgrok.training.loop import train
from mechgrok.training.optim import load_optimizer_tensors, lr_at, make_optimizer


def plain_loop(cfg: Config, epochs: int, test_every_epoch: bool) -> float:
    """Seconds per epoch of the demo's plain HookedTransformer training loop."""
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
    """Seconds per epoch of ``mechgrok.train`` in its steady state: from its first metrics row
    after the start-up (building the model and tables, the first files) to its last, so the
    evaluations and checkpoints in between count and the one-off costs of a run do not."""
    # tune_process=False: main() already applied (or declined) the same settings for every loop
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg.replace(epochs=epochs), Path(tmp) / "run", tune_process=False)
    m = result.metrics.set_index("epoch").elapsed_s
    start = m.index[m.index >= min(50, epochs // 4)][0]
    return (m.iloc[-1] - m[start]) / (m.index[-1] - start)


class BareStep:
    """The fast step and the optimiser step on a model, nothing else (no evaluation, no files)."""

    def __init__(self, cfg: Config, model: torch.nn.Module | None = None, optimizer=None, split=None):
        task = ModularTask(cfg.p, cfg.op)
        split = split or make_split(task.n_pairs, cfg.frac_train, cfg.seed)
        self.model = model or build_model(cfg, split=split)
        self.optimizer = optimizer or make_optimizer(self.model, cfg)
        self.step = FastPath(task.tokens()[split.train], task.labels()[split.train], loss_dtype=cfg.loss_dtype)
        self.cfg = cfg
        self.epoch = 0

    def __call__(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.step.loss_and_grad(self.model, accuracy=False)
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.cfg, self.epoch)
            self.optimizer.step()
            self.epoch += 1
        return (time.perf_counter() - start) / steps


def floor_gemms(cfg: Config, n: int) -> tuple[float, float]:
    """(seconds, FLOPs) of the GEMMs every formulation keeps: W_out and W_U, forward and backward."""
    post, d_resid = torch.randn(n, cfg.d_mlp), torch.randn(n, cfg.d_model)
    W_out, W_U, d_logits = torch.randn(cfg.d_mlp, cfg.d_model), torch.randn(cfg.d_model, cfg.d_vocab_out), torch.randn(n, cfg.d_vocab_out)

    def once():
        resid = post @ W_out
        resid @ W_U, resid.T @ d_logits, d_logits @ W_U.T
        post.T @ d_resid, d_resid @ W_out.T

    once()
    times = []
    for _ in range(9):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    flops = 2 * n * (3 * cfg.d_mlp * cfg.d_model + 3 * cfg.d_model * cfg.d_vocab_out)
    return statistics.median(times), flops


def gemm_rate(size: int = 1024) -> float:
    """FLOP/s of a size³ float32 GEMM under the current settings."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * size**3 / statistics.median(times)


def late_steps(run: Path, rounds: int, steps: int) -> dict:
    """ms per bare step resumed from ``run``'s resume file, with subnormals flushed and without."""
    ckpt = runs.read_checkpoint_file(run / runs.RESUME_FILE)
    cfg = ckpt.config
    arms = {}
    for name in ("flushed", "not_flushed"):
        model = runs.model_from_state(cfg, ckpt.model_state, ckpt.split)
        optimizer = make_optimizer(model, cfg)
        load_optimizer_tensors(model, optimizer, ckpt.optimizer_state)
        arms[name] = BareStep(cfg, model, optimizer, ckpt.split)
        arms[name].epoch = ckpt.epoch
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(rounds):
        for name, step in arms.items():
            with speed.denormal_mode(flush=name == "flushed"):
                times[name].append(step(steps))
    med = {name: statistics.median(v) for name, v in times.items()}
    flushed, plain = (dict(arms[name].model.named_parameters()) for name in ("flushed", "not_flushed"))
    weight_diff = max(float((flushed[k] - plain[k]).detach().abs().max()) for k in flushed)
    weight_scale = max(float(plain[k].detach().abs().max()) for k in plain)
    losses = {name: float(arm.step.loss(arm.model)[0]) for name, arm in arms.items()}
    return {"run": str(run), "from_epoch": ckpt.epoch, "steps_per_round": steps, "rounds": rounds,
            "ms_per_step": {k: v * 1e3 for k, v in med.items()},
            "slowdown_without_flush": med["not_flushed"] / med["flushed"],
            "subnormal_share_of_loss_gradient": subnormal_gradient_share(arms["not_flushed"]),
            "weights_max_abs_diff_between_arms": weight_diff, "weights_max_abs": weight_scale,
            "train_loss_after": losses}


def subnormal_gradient_share(step: BareStep) -> float:
    """The share of the loss gradient's entries (softmax minus one-hot over the batch, cast to
    float32 as the step does) that are subnormal: late in training most wrong-class probabilities
    are far below float32's smallest normal."""
    # made and counted unflushed (with denormals-are-zero on, a subnormal compares equal to 0)
    with torch.no_grad(), speed.denormal_mode(flush=False):
        logits = step.step.logits(step.model)
        grad = (torch.softmax(logits.double(), -1) / len(logits)).float()
        return float(((grad != 0) & (grad.abs() < torch.finfo(torch.float32).tiny)).float().mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=int, default=113)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median over them)")
    parser.add_argument("--plain-epochs", type=int, default=10, help="epochs per round of loops (a) and (b)")
    parser.add_argument("--mechgrok-epochs", type=int, default=200, help="epochs per round of loop (c)")
    parser.add_argument("--bare-steps", type=int, default=50, help="steps per round of loop (d)")
    parser.add_argument("--no-tune", action="store_true", help="leave torch's settings and malloc as they are")
    parser.add_argument("--late", type=Path, default=None, help="a grokked run folder: also time late steps from its resume file")
    parser.add_argument("--late-only", action="store_true", help="with --late: time the late steps only")
    parser.add_argument("--full-run", action="store_true", help="also time a whole run to --full-epochs")
    parser.add_argument("--full-epochs", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: mechgrok's default)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = parser.parse_args()
    if args.late is not None and not (args.late / runs.RESUME_FILE).exists():
        print(f"--late {args.late}: no {runs.RESUME_FILE} there; pass a run folder trained past grokking "
              "(e.g. `mechgrok train --out runs/mainline`)", file=sys.stderr)
        return 2

    tune = not args.no_tune
    with speed.torch_threads(args.threads) as threads, speed.tuned_malloc(tune) as malloc, \
            speed.fast_float32_matmul(tune) as fast_matmul, speed.flushed_denormals(tune) as flushed:
        settings = {"fast_float32_matmul": fast_matmul, "malloc": malloc, "flushed_denormals": flushed}
        result = run(args, threads, settings)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def run(args: argparse.Namespace, threads: int, settings: dict) -> dict:
    cfg = Config(p=args.p)
    n_train = int(cfg.frac_train * cfg.p**2)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {threads} thread(s), "
          f"settings {settings}, p={cfg.p}, {n_train} train pairs, eval_every={cfg.eval_every}")
    if args.late is not None and args.late_only:
        late = late_steps(args.late, args.rounds, args.bare_steps)
        ms = late["ms_per_step"]
        print(f"late steps from {args.late} epoch {late['from_epoch']}: {ms['flushed']:.1f} ms/step flushed, "
              f"{ms['not_flushed']:.1f} not flushed ({late['slowdown_without_flush']:.2f}x); "
              f"{late['subnormal_share_of_loss_gradient']:.1%} of the loss gradient's entries subnormal; after "
              f"the same steps the arms' weights differ by at most {late['weights_max_abs_diff_between_arms']:.2e} "
              f"(largest weight {late['weights_max_abs']:.2f}), train losses {late['train_loss_after']}")
        return {"torch": torch.__version__, "threads": threads, "settings": settings, "late": late}
    # warm-up: first calls pay for allocator growth and kernel selection
    plain_loop(cfg, 2, True)
    mechgrok_loop(cfg, 20)
    bare = BareStep(cfg)
    bare(5)
    times: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": [], "floor": []}
    for r in range(args.rounds):
        times["a"].append(plain_loop(cfg, args.plain_epochs, test_every_epoch=True))
        times["b"].append(plain_loop(cfg, args.plain_epochs, test_every_epoch=False))
        times["c"].append(mechgrok_loop(cfg, args.mechgrok_epochs))
        times["d"].append(bare(args.bare_steps))
        floor_s, floor_flops = floor_gemms(cfg, n_train)
        times["floor"].append(floor_s)
        print(f"round {r + 1}: " + "  ".join(f"({k}) {v[-1] * 1e3:.1f} ms" for k, v in times.items()), flush=True)
    rate = gemm_rate()
    med = {k: statistics.median(v) for k, v in times.items()}
    floor_at_rate = floor_flops / rate
    print()
    print(f"(a) demo loop: HookedTransformer + test loss every epoch {med['a'] * 1e3:7.1f} ms/epoch")
    print(f"(b) demo loop without the per-epoch test loss            {med['b'] * 1e3:7.1f} ms/epoch")
    print(f"(c) mechgrok.train (eval every {cfg.eval_every} epochs, files written)   {med['c'] * 1e3:7.1f} ms/epoch")
    print(f"(d) bare fast step + AdamW                                {med['d'] * 1e3:7.1f} ms/step")
    print(f"    floor: its unavoidable GEMMs ({floor_flops / 1e9:.2f} GFLOP) timed {med['floor'] * 1e3:.1f} ms; "
          f"at {rate / 1e9:.0f} GFLOP/s (1024³ GEMM) {floor_at_rate * 1e3:.1f} ms")
    print(f"ratio (a)/(c) = {med['a'] / med['c']:.2f}   (b)/(c) = {med['b'] / med['c']:.2f}   "
          f"(d)/floor = {med['d'] / floor_at_rate:.2f} at the GEMM rate, {med['d'] / med['floor']:.2f} of the timed GEMMs")
    result = {
        "torch": torch.__version__, "threads": threads, "settings": settings, "p": cfg.p, "n_train": n_train,
        "ms": {k: v * 1e3 for k, v in med.items()}, "rounds": {k: [x * 1e3 for x in v] for k, v in times.items()},
        "gemm_gflops": rate / 1e9, "floor_gflop": floor_flops / 1e9, "floor_ms_at_rate": floor_at_rate * 1e3,
        "ratio_a_c": med["a"] / med["c"], "ratio_b_c": med["b"] / med["c"],
        "ratio_d_floor_at_rate": med["d"] / floor_at_rate, "ratio_d_floor_timed": med["d"] / med["floor"],
    }

    if args.late is not None:
        late = late_steps(args.late, args.rounds, args.bare_steps)
        ms = late["ms_per_step"]
        print(f"late steps from {args.late} epoch {late['from_epoch']}: {ms['flushed']:.1f} ms/step flushed, "
              f"{ms['not_flushed']:.1f} not flushed ({late['slowdown_without_flush']:.2f}x), "
              f"{late['subnormal_share_of_loss_gradient']:.1%} of the loss gradient subnormal; early bare step "
              f"{med['d'] * 1e3:.1f} ms; weights apart by {late['weights_max_abs_diff_between_arms']:.2e} after")
        result["late"] = late

    if args.full_run:
        with tempfile.TemporaryDirectory() as tmp:
            result_run = train(cfg.replace(epochs=args.full_epochs), Path(tmp) / "run", tune_process=False)
            shutil.rmtree(Path(tmp) / "run", ignore_errors=True)
        last = result_run.metrics.iloc[-1]
        grokked = result_run.metrics[result_run.metrics.test_acc >= 0.99].epoch
        print(f"full run to epoch {args.full_epochs}: {result_run.elapsed_s / 60:.2f} min, "
              f"final test accuracy {last.test_acc:.4f}, test loss {last.test_loss:.3e}, "
              f"test accuracy >= 0.99 from epoch {int(grokked.min()) if len(grokked) else 'never'}")
        result["full_run"] = {"epochs": args.full_epochs, "wall_s": result_run.elapsed_s, "final_test_acc": float(last.test_acc),
                              "final_test_loss": float(last.test_loss),
                              "grok_epoch": int(grokked.min()) if len(grokked) else None}
    return result


if __name__ == "__main__":
    sys.exit(main())
