"""The ``mechgrok`` command line: ``train``, ``info`` and ``reproduce`` (the only module that prints)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from mechgrok.config import INITS, LOSS_DTYPES, OPERATION_NAMES, Config

_HELP = {
    "p": "the modulus; the `=` token is p",
    "op": f"the operation: {', '.join(OPERATION_NAMES)}",
    "family": "model family (mechgrok.registry)",
    "loss_dtype": f"precision of the training loss: {', '.join(LOSS_DTYPES)}",
    "frac_train": "fraction of all pairs used for training",
    "seed": "seed of the split and of the initialisation",
    "d_model": "residual stream width",
    "n_heads": "attention heads (d_head = d_model / n_heads)",
    "d_mlp": "MLP neurons",
    "init": f"initialisation: {', '.join(INITS)}",
    "lr": "AdamW learning rate",
    "weight_decay": "AdamW weight decay",
    "beta1": "AdamW beta1",
    "beta2": "AdamW beta2",
    "warmup_steps": "linear learning-rate warm-up steps",
    "epochs": "full-batch steps to train",
    "eval_every": "evaluate the test set every this many epochs",
    "checkpoint_every": "save weights every this many epochs",
}


def default_run_dir(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.op}-p{cfg.p}-frac{cfg.frac_train:g}-seed{cfg.seed}"


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    defaults = Config()
    for f in dataclasses.fields(Config):
        default = getattr(defaults, f.name)
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=type(default),
            default=default,
            help=f"{_HELP[f.name]} (default: {default})",
        )


def _config_from_args(args: argparse.Namespace) -> Config:
    return Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})


def cmd_train(args: argparse.Namespace) -> int:
    from mechgrok.training.loop import train

    cfg = _config_from_args(args)
    out = Path(args.out) if args.out else default_run_dir(cfg)
    result = train(cfg, out, progress=not args.no_progress)
    last = result.metrics.iloc[-1]
    if result.resumed_from is not None:
        print(f"resumed {out} from epoch {result.resumed_from}")
    if result.interrupted:
        print(f"interrupted at epoch {result.epoch}: checkpoint written; run the same command again to resume")
    print(
        f"{out}: epoch {result.epoch}/{cfg.epochs} in {result.elapsed_s:.1f} s\n"
        f"  train loss {last.train_loss:.3e}  accuracy {last.train_acc:.4f}\n"
        f"  test  loss {last.test_loss:.3e}  accuracy {last.test_acc:.4f}  (at epoch {int(last.epoch)})"
    )
    return 130 if result.interrupted else 0


def cmd_info(args: argparse.Namespace) -> int:
    from mechgrok.runs import load_checkpoint

    run = load_checkpoint(args.path)
    cfg = run.config
    print(f"{args.path}  [{run.source_format}]")
    print(f"  task     c = {cfg.op}(a, b) mod {cfg.p}; train {len(run.split.train)} / test {len(run.split.test)} pairs")
    print(f"  model    d_model {cfg.d_model}, {cfg.n_heads} heads of {cfg.d_head}, d_mlp {cfg.d_mlp}, "
          f"d_vocab_out {run.model.cfg.d_vocab_out}, init {cfg.init}")
    print(f"  training lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}, betas {cfg.betas}, "
          f"warm-up {cfg.warmup_steps}, epochs {cfg.epochs}, seed {cfg.seed}")
    epochs = run.checkpoint_epochs
    if epochs:
        print(f"  saved    {len(epochs)} checkpoints, epochs {epochs[0]}..{epochs[-1]}")
    print(f"  loaded   epoch {run.epoch}")
    if run.metrics is not None and len(run.metrics):
        last = run.metrics.iloc[-1]
        cols = [c for c in ("train_loss", "train_acc", "test_loss", "test_acc") if c in run.metrics and last[c] == last[c]]
        print(f"  final    epoch {int(last.epoch)}: " + ", ".join(f"{c} {last[c]:.4g}" for c in cols))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from mechgrok import runs
    from mechgrok.formats import import_run

    out = import_run(args.file, args.out)
    cfg = runs.read_config(out)
    epochs = runs.checkpoint_epochs(out)
    record = runs.imported_from(out) or {}
    print(f"imported {args.file} [{record.get('source_format', '?')}] into {out}")
    print(f"  task     c = {cfg.op}(a, b) mod {cfg.p}, p={cfg.p}; d_vocab_out {cfg.d_vocab_out} "
          f"(the file's was {record.get('source_d_vocab_out', '?')})")
    print(f"  wrote    {len(epochs)} checkpoints, epochs {epochs[0]}..{epochs[-1]}; config.json, split.safetensors, "
          f"metrics.csv (loss and accuracy computed at each checkpoint), {runs.SOURCE_LOSSES_FILE}, {runs.IMPORT_FILE}")
    print("  no resume.safetensors: the file holds no optimizer state, so this run cannot be trained further")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from mechgrok.reproduce.pipeline import PAPER_EPOCHS, reproduce

    epochs = PAPER_EPOCHS if args.paper else args.epochs
    try:
        result = reproduce(args.out, epochs=epochs, seeds=args.seeds, parallel=args.parallel,
                           progress_bar=not args.no_progress and args.parallel == 1,
                           on_step=lambda message: print(f"[reproduce] {message}", flush=True))
    except KeyboardInterrupt as err:
        print(f"interrupted: {err or 'a checkpoint was written'}; run the same command again to resume")
        return 130
    s = result.summary
    print(f"key frequencies: {', '.join(map(str, s['key_frequencies']))} (paper: 14, 35, 41, 42, 52)")
    for row in s["phases_by_seed"]:
        print(f"  phases, seed {row['seed']}: memorization ends {row['memorization_end']}, "
              f"circuit formation ends {row['circuit_formation_end']}, cleanup ends {row['cleanup_end']}")
    final = s["final"]
    print(f"final (epoch {final['epoch']}): test loss {final['test_loss']:.3g}, restricted loss {final['restricted_loss']:.3g}, "
          f"test accuracy {final['test_acc']:.4f}")
    print(f"wrote {result.report} and {result.summary_path} in {s['timings_s']['total']:.0f} s")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from mechgrok.reproduce.pipeline import write_ablation_tables

    _, paths = write_ablation_tables(args.run, epoch=args.epoch, rule=args.rule, threshold=args.threshold, out=args.out)
    print(f"wrote {len(paths) - 1} CSV tables and {paths[-1].name} to {paths[-1].parent}")
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from mechgrok.report import figures

    analysis = figures.RunAnalysis(args.run, rule=args.rule, threshold=args.threshold)
    out = figures.make_figure(args.name, analysis)
    paths = figures.write_figure(out, args.run, args.out)
    print(f"{args.name}: {out.caption}")
    for path in paths:
        print(f"  wrote {path}")
    return 0


_SWEEP_DEFAULTS = {"frac_train": [0.3, 0.4, 0.5, 0.6, 0.7], "weight_decay": [0.3, 1.0, 3.0]}


def cmd_sweep(args: argparse.Namespace) -> int:
    from mechgrok.report import figures

    build = {"frac_train": figures.appendix_frac_train_sweep, "weight_decay": figures.appendix_weight_decay_sweep}[args.field]
    values = args.values or _SWEEP_DEFAULTS[args.field]
    out = build(args.run, values, args.epochs, progress_bar=not args.no_progress)
    paths = figures.write_figure(out, args.run, args.out)
    print(f"{out.name}: {out.caption}")
    for path in paths:
        print(f"  wrote {path}")
    return 0


def _add_analysis_flags(parser: argparse.ArgumentParser, out_default: str) -> None:
    parser.add_argument("--run", required=True, help="run folder (mechgrok train / mechgrok reproduce --out RUN)")
    parser.add_argument("--rule", default="W_L",
                        help="key-frequency rule: W_L (default, the paper's definition), W_E or clusters")
    parser.add_argument("--threshold", type=float, default=0.85, help="neuron-cluster threshold (default: 0.85)")
    parser.add_argument("--out", default=None, help=f"output folder (default: RUN/{out_default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mechgrok", description="Mechanistic interpretability of grokking.")
    sub = parser.add_subparsers(dest="command", required=True)

    p_train = sub.add_parser("train", help="train (or resume) a run; Ctrl-C saves a checkpoint")
    _add_config_flags(p_train)
    p_train.add_argument("--out", help="run folder (default: runs/<op>-p<p>-frac<frac>-seed<seed>)")
    p_train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p_train.set_defaults(func=cmd_train)

    p_info = sub.add_parser("info", help="describe a run folder or checkpoint file")
    p_info.add_argument("path", help="run folder, .safetensors checkpoint, or a foreign .pth file")
    p_info.set_defaults(func=cmd_info)

    p_import = sub.add_parser("import", help="turn a TransformerLens Grokking-demo .pth or the original paper's "
                              "full_run_data.pth into a mechgrok run folder (docs/formats.md)")
    p_import.add_argument("file", help="the foreign .pth file")
    p_import.add_argument("--out", required=True, help="the new run folder (must not exist, or be empty)")
    p_import.set_defaults(func=cmd_import)

    from mechgrok.reproduce.nanda2023 import EPOCHS as PAPER_EPOCHS

    DEFAULT_EPOCHS = Config().epochs

    p_rep = sub.add_parser("reproduce", help="train the mainline (or reuse it), compute the progress measures, "
                           "make every figure and the ablation table, and write report.html + summary.json")
    p_rep.add_argument("--out", default="runs/mainline", help="run folder (default: runs/mainline)")
    p_rep.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                       help=f"epochs per seed (default: {DEFAULT_EPOCHS}, enough to grok and clean up)")
    p_rep.add_argument("--paper", action="store_true", help=f"train the paper's full {PAPER_EPOCHS:,} epochs")
    p_rep.add_argument("--seeds", type=int, default=1,
                       help="seeds to train, one after another (default: 1); Fig. 2 shades the spread")
    p_rep.add_argument("--parallel", type=int, default=1,
                       help="train this many seeds at once in separate processes (default: 1; on 2 cores, 2 "
                       "single-thread processes give ~1.2x the throughput of one)")
    p_rep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p_rep.set_defaults(func=cmd_reproduce)

    p_table = sub.add_parser("table", help="write the reverse-engineering tables of a run (§4.4, Fig. 6, Table 1, "
                             "clusters, headline numbers beside the paper's) to RUN/analysis")
    _add_analysis_flags(p_table, "analysis")
    p_table.add_argument("--epoch", type=int, default=None, help="checkpoint epoch (default: the newest)")
    p_table.set_defaults(func=cmd_table)

    from mechgrok.report import FIGURE_NAMES

    p_fig = sub.add_parser("figure", help="build one figure of a run into RUN/figures (HTML and its data as CSV)")
    p_fig.add_argument("name", choices=FIGURE_NAMES, help="the figure")
    _add_analysis_flags(p_fig, "figures")
    p_fig.set_defaults(func=cmd_figure)

    p_sweep = sub.add_parser("sweep", help="opt-in appendix sweeps: train one run per value of a config field with "
                             "RUN's other settings, then plot their test loss and accuracy")
    p_sweep.add_argument("field", choices=tuple(_SWEEP_DEFAULTS), help="the config field to sweep")
    p_sweep.add_argument("--run", required=True, help="run folder whose settings the sweep copies")
    p_sweep.add_argument("--values", type=float, nargs="+", default=None,
                         help="values to try (default: " + "; ".join(f"{k} {' '.join(map(str, v))}" for k, v in _SWEEP_DEFAULTS.items()) + ")")
    p_sweep.add_argument("--epochs", type=int, default=5000, help="epochs per run (default: 5000)")
    p_sweep.add_argument("--out", default=None, help="output folder (default: RUN/figures)")
    p_sweep.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p_sweep.set_defaults(func=cmd_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"mechgrok: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
