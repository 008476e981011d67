"""The ``mechgrok`` command line: ``train``, ``info``, ``import``, ``reproduce``,
``table``, ``figure`` and ``sweep`` (the only module that prints).

Building the parser imports no torch, pandas or TransformerLens, so ``mechgrok --help`` is
instant; each command imports what it needs when it runs.

Config flags default to None, so a command knows which flags were given: on an existing run
folder the run's saved config is used and only the given flags override it. ``--preset NAME``
(:mod:`mechgrok.presets`) starts from a preset's fields instead of ``Config()``'s; explicit flags
override those too.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Callable

from mechgrok.config import (
    ACT_FNS,
    DATA_MODES,
    DECAYS,
    FIELD_GROUPS,
    FROZEN_BIASES,
    INITS,
    LOSS_DTYPES,
    LOSS_SCALES,
    OPERATION_NAMES,
    PAIRS,
    SPLITS,
    Config,
)
from mechgrok.presets import PRESET_DESCRIPTIONS, PRESETS, preset_fields

_HELP = {
    "task": "the task (mechgrok.registry): modular, parity, addition, induction, max_list",
    "pairs": f"modular: which pairs the split draws from: {', '.join(PAIRS)} (a <= b)",
    "n_bits": "parity: bits per string",
    "parity_bits": "parity: the label is the parity of the first this many bits",
    "n_train": "parity and the sequence tasks: train examples",
    "n_test": "parity and the sequence tasks: test examples",
    "n_digits": "addition: digits per operand",
    "seq_len": "induction: tokens per sequence; max_list: entries per list",
    "n_symbols": "induction: token vocabulary; max_list: ordinary entries (as many special ones)",
    "repeat_len": "induction: length of the repeated subsequence",
    "data": f"sequence tasks and parity: {', '.join(DATA_MODES)} (fresh: batch_size new examples every step)",
    "n_layers": "sequence_transformer: blocks",
    "attn_only": "sequence_transformer: attention only, no MLPs (true or false)",
    "batch_size": "examples per step (0: the whole train set)",
    "act_fn": f"activation of the circle family: {', '.join(ACT_FNS)}",
    "decay": f"weight decay: {', '.join(DECAYS)} (l1 adds weight_decay * sign(w) to the gradient)",
    "loss_scale": f"training loss: {', '.join(LOSS_SCALES)} (per_output: cross-entropy / outputs, Pearce et al.)",
    "p": "the modulus; the `=` token is p",
    "op": f"the operation: {', '.join(OPERATION_NAMES)}",
    "family": "model family (mechgrok.registry)",
    "loss_dtype": f"precision of the training loss: {', '.join(LOSS_DTYPES)}",
    "frac_train": "modular: fraction of the pairs used for training",
    "seed": "seed of the split and of the initialisation (unless --split-seed or --model-seed is given)",
    "split": f"modular: how the pairs are shuffled: {', '.join(SPLITS)} (torch.randperm; Python's random.shuffle, "
             "the original code's)",
    "split_seed": "modular: seed of the split (default: --seed)",
    "model_seed": "transformer: seed of the initialisation (default: --seed)",
    "unembed_equals": "transformer: a p+1 wide unembed with a logit for `=`, in the softmax (true or false)",
    "frozen_biases": f"transformer: the biases held at zero: {', '.join(FROZEN_BIASES)} (non_mlp: all but b_in, b_out)",
    "d_model": "residual stream width (the MLP families: the embedding width)",
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


def default_run_dir(cfg: Config, preset: str | None = None) -> Path:
    if preset not in (None, "paper"):
        return Path("runs") / f"{preset}-{cfg.op}-p{cfg.p}-frac{cfg.frac_train:g}-seed{cfg.seed}"
    if cfg.task in ("addition", "induction", "max_list"):
        size = f"fresh{cfg.batch_size}" if cfg.data == "fresh" else f"n{cfg.n_train}"
        return Path("runs") / f"{cfg.task}-{size}-L{cfg.n_layers}-d{cfg.d_model}-seed{cfg.seed}"
    if cfg.task == "parity":
        return Path("runs") / f"parity{cfg.parity_bits}of{cfg.n_bits}-n{cfg.n_train}-{cfg.family}-seed{cfg.seed}"
    family = "" if cfg.family == "transformer" else f"-{cfg.family}"
    return Path("runs") / f"{cfg.op}-p{cfg.p}-frac{cfg.frac_train:g}{family}-seed{cfg.seed}"


# String fields with a fixed set of values get argparse choices (an unknown one is refused
# with the list); `family` does not, since families can be registered at run time.
_CHOICES = {"op": OPERATION_NAMES, "init": INITS, "loss_dtype": LOSS_DTYPES, "pairs": PAIRS, "act_fn": ACT_FNS,
            "decay": DECAYS, "loss_scale": LOSS_SCALES, "data": DATA_MODES, "split": SPLITS,
            "frozen_biases": FROZEN_BIASES}
# Fields whose default is None ("the run's seed"): the type of the value a flag gives.
_OPTIONAL_TYPES = {"split_seed": int, "model_seed": int}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _path(what: str):
    """An argparse type for a path argument: the empty string is refused (Path('') would be '.')."""

    def convert(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"{what} is empty; pass a path")
        return text

    convert.__name__ = "path"
    return convert


def _number(flag: str, kind: type, example: object, minimum: int | None = None):
    """An argparse type converting to ``kind``; its error names the value and an example."""
    what = "an integer" if kind is int else "a number"
    if minimum is not None:
        what += f" >= {minimum}"

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or (minimum is not None and value < minimum):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}; pass e.g. {flag} {example}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in some messages
    return convert


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Every Config field as a flag, in one argument group per ``config.FIELD_GROUPS`` entry.

    Each defaults to None (the help shows Config's default), so that :func:`_run_config` can
    tell the flags given on the command line from the rest.
    """
    defaults = Config()
    for group_name, names in FIELD_GROUPS.items():
        group = parser.add_argument_group(f"{group_name} settings (default: Config(), or the run's saved config)")
        for name in names:
            default = getattr(defaults, name)
            kind = _OPTIONAL_TYPES.get(name, type(default))
            example = 0 if default is None else default
            group.add_argument(
                _flag(name),
                dest=name,
                type=kind if kind is str else _boolean(_flag(name)) if kind is bool else _number(_flag(name), kind, example),
                choices=_CHOICES.get(name),
                default=None,
                help=f"{_HELP[name]} (default: {default})",
            )


def _boolean(flag: str):
    def parse(text: str) -> bool:
        value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
        if value is None:
            raise argparse.ArgumentTypeError(f"{flag} {text!r} must be true or false")
        return value

    return parse


def _add_preset_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=tuple(PRESETS), default=None,
                        help="start from a preset's settings (docs/fidelity.md); explicit flags override them: "
                        + "; ".join(f"{name}: {text}" for name, text in PRESET_DESCRIPTIONS.items()))


def _add_threads_flag(parser: argparse.ArgumentParser) -> None:
    # The default is mechgrok.speed.default_threads(), written out here because computing it
    # would import torch while building the parser (tests/test_cli.py pins the two together).
    parser.add_argument("--threads", type=_number("--threads", int, 1, minimum=1), default=None,
                        help="torch threads while computing (default: 1, or $MECHGROK_THREADS; one thread "
                        "stays fast when other jobs share the CPU, docs/training.md)")


# mechgrok.runs.CONFIG_FILE, named here because importing mechgrok.runs imports torch
_CONFIG_FILE = "config.json"


def _config(**fields) -> Config:
    """``Config(**fields)``, its error naming the command-line flag (``--frac-train``) as well."""
    try:
        return Config(**fields)
    except ValueError as err:
        name = str(err).split("=", 1)[0]
        if name in fields:
            raise ValueError(f"{_flag(name)} {fields[name]}: {err}") from None
        raise


def _given_config(args: argparse.Namespace) -> dict:
    """The config fields whose flags were given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name, None) is not None}


def _asked_config(args: argparse.Namespace) -> dict:
    """The config fields a command asks for: its ``--preset``'s (if given), the given flags on top."""
    preset, given = getattr(args, "preset", None), _given_config(args)
    return {**(preset_fields(preset, given.get("seed")) if preset is not None else {}), **given}


def _run_config(args: argparse.Namespace, out: Path) -> Config:
    """The config to run in ``out``: its saved config (if ``out`` holds a run) with the asked
    fields (``--preset``'s, then the given flags) on top, else ``Config()`` with them. An asked
    field that contradicts a saved field which cannot change when continuing a run is a
    ``ValueError`` naming the field and the fix."""
    given = _asked_config(args)
    if not (out / _CONFIG_FILE).exists():  # a new run: no torch import, so a bad flag fails fast
        return _config(**given)
    from mechgrok import runs
    from mechgrok.training.loop import RESUMABLE_CHANGES, config_clash

    saved = runs.read_config(out)
    clash = config_clash(saved, given)
    if clash:
        detail = ", ".join(f"{_flag(k)} {v} contradicts its {k}={old!r}" for k, (old, v) in clash.items())
        changeable = ", ".join(_flag(k) for k in sorted(RESUMABLE_CHANGES))
        raise ValueError(
            f"{out} holds a run with other settings: {detail}. Drop {'that flag' if len(clash) == 1 else 'those flags'} "
            f"to continue the run with its saved config (only {changeable} may change), or choose another --out"
        )
    return _config(**{**saved.to_dict(), **given})


def _out_and_config(args: argparse.Namespace, default_out: Callable[[Config], Path]) -> tuple[Path, Config]:
    """(run folder, config) of a command: ``--out`` or the default folder for the given flags."""
    out = Path(args.out) if args.out is not None else default_out(_config(**_asked_config(args)))
    return out, _run_config(args, out)


def cmd_train(args: argparse.Namespace) -> int:
    out, cfg = _out_and_config(args, lambda c: default_run_dir(c, args.preset))  # first: a bad flag fails before torch loads
    from mechgrok.training.loop import train

    resumed = []

    def on_resume(epoch: int) -> None:
        resumed.append(epoch)
        print(f"resuming {out} from epoch {epoch} (to epoch {cfg.epochs})", flush=True)

    result = train(cfg, out, progress=not args.no_progress, threads=args.threads, on_resume=on_resume, device=args.device)
    last = result.metrics.iloc[-1]
    idle = result.resumed_from is not None and not resumed
    if idle:
        print(f"{out} is already trained to epoch {result.epoch}; nothing to do (pass --epochs N to train on)")
    if result.interrupted:
        print(f"interrupted at epoch {result.epoch}: checkpoint written; run the same command again to resume")
    timing = "" if idle else f" in {result.elapsed_s:.1f} s of training in all, on {result.threads} thread{'s' if result.threads > 1 else ''}"
    print(
        f"{out}: epoch {result.epoch}/{cfg.epochs}{timing}\n"
        f"  train loss {last.train_loss:.3e}  accuracy {last.train_acc:.4f}\n"
        f"  test  loss {last.test_loss:.3e}  accuracy {last.test_acc:.4f}  (at epoch {int(last.epoch)})"
    )
    return 130 if result.interrupted else 0


def cmd_info(args: argparse.Namespace) -> int:
    from mechgrok.runs import load_checkpoint

    from mechgrok.runs import CONFIG_FILE, read_config

    run = load_checkpoint(args.path)
    cfg = run.config
    # an older checkpoint's metadata holds the epochs asked when it was written; the folder says now
    if run.path is not None and (run.path / CONFIG_FILE).exists():
        cfg = read_config(run.path)
    print(f"{args.path}  [{run.source_format}]")
    if cfg.task == "parity":
        print(f"  task     parity of the first {cfg.parity_bits} of {cfg.n_bits} bits; train {len(run.split.train)} / "
              f"test {len(run.split.test)} strings")
    elif cfg.task != "modular":
        train = f"fresh batches of {cfg.batch_size} every step" if cfg.data == "fresh" else f"train {len(run.split.train)}"
        print(f"  task     {run.task.describe()}; {train} / test {len(run.split.test)} examples")
    else:
        pairs = " (pairs a <= b)" if cfg.pairs == "unordered" else ""
        how = "random.shuffle" if cfg.split == "python" else "torch.randperm"
        print(f"  task     c = {cfg.op}(a, b) mod {cfg.p}; train {len(run.split.train)} / test {len(run.split.test)} pairs{pairs}; "
              f"split by {how}, seed {cfg.data_seed}")
    if cfg.family == "transformer":
        print(f"  model    d_model {cfg.d_model}, {cfg.n_heads} heads of {cfg.d_head}, d_mlp {cfg.d_mlp}, "
              f"d_vocab_out {run.model.cfg.d_vocab_out}, init {cfg.init} (seed {cfg.init_seed}), "
              f"frozen biases {cfg.frozen_biases}")
    elif cfg.family == "sequence_transformer":
        mlp = "attention only" if cfg.attn_only else f"d_mlp {cfg.d_mlp}"
        print(f"  model    {cfg.n_layers}-layer HookedTransformer, d_model {cfg.d_model}, {cfg.n_heads} heads of {cfg.d_head}, "
              f"{mlp}, d_vocab {cfg.d_vocab}, n_ctx {cfg.n_ctx}, init {cfg.init}")
    else:
        weights = ", ".join(f"{name} {list(t.shape)}" for name, t in run.model.named_parameters())
        act = f", {cfg.act_fn}" if cfg.family == "circle" else ""
        print(f"  model    family {cfg.family}{act}: {weights}")
    decay = "L1 decay" if cfg.decay == "l1" else "weight decay"
    scale = ", loss / outputs" if cfg.loss_scale == "per_output" else ""
    print(f"  training lr {cfg.lr:g}, {decay} {cfg.weight_decay:g}, betas {cfg.betas}, "
          f"warm-up {cfg.warmup_steps}, {cfg.loss_dtype} loss{scale}, epochs {cfg.epochs}, seed {cfg.seed}")
    epochs = run.checkpoint_epochs
    if epochs:
        print(f"  saved    {len(epochs)} checkpoints, epochs {epochs[0]}..{epochs[-1]}")
    print(f"  loaded   epoch {run.epoch}")
    if run.metrics is not None and len(run.metrics):
        last = run.metrics.iloc[-1]
        newest = int(last.epoch)
        cols = [c for c in ("train_loss", "train_acc", "test_loss", "test_acc") if c in run.metrics and last[c] == last[c]]
        # "final" only once the run reached its configured epochs; before that it may still be training
        done = newest >= cfg.epochs
        print(f"  trained  to epoch {newest} of {cfg.epochs}" + ("" if done else " (still training, or interrupted)"))
        print(f"  {'final ' if done else 'newest'}   epoch {newest}: " + ", ".join(f"{c} {last[c]:.4g}" for c in cols))
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


def _reproduce_dir(cfg: Config, preset: str | None = None) -> Path:
    """runs/mainline for the paper's settings (any schedule), runs/<preset> for a preset's other
    than paper's, else the train command's default."""
    reference = Config(**preset_fields(preset)) if preset is not None else Config()
    same = all(getattr(cfg, f.name) == getattr(reference, f.name) for f in dataclasses.fields(Config)
               if f.metadata["group"] != "schedule")
    if same:
        return Path("runs/mainline") if preset in (None, "paper") else Path("runs") / preset
    return default_run_dir(cfg, preset)


_WORKS = ("nanda2023", "pair2023", "phase-changes")
_PAIR_FLAGS = {"full": False, "executor": "process", "workers": None}


def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.work != "phase-changes" and args.digits is not None:
        raise ValueError("--digits applies to `mechgrok reproduce phase-changes` only (the addition experiment's "
                         "digits); drop it, or pass phase-changes")
    if args.work == "pair2023":
        return _reproduce_pair(args)
    if args.work == "phase-changes":
        return _reproduce_phase_changes(args)
    given = [f"--{name}" for name, default in _PAIR_FLAGS.items() if getattr(args, name) != default]
    if given:
        raise ValueError(f"{', '.join(given)} {_apply(given)} to `mechgrok reproduce pair2023` and phase-changes only; drop "
                         f"{'it' if len(given) == 1 else 'them'}, or pass one of those")
    from mechgrok.reproduce import nanda2023

    if args.paper:
        if args.epochs is not None and args.epochs != nanda2023.EPOCHS:
            raise ValueError(f"--paper means --epochs {nanda2023.EPOCHS}, but --epochs {args.epochs} was given; pass one of them")
        args.epochs = nanda2023.EPOCHS
    out, cfg = _out_and_config(args, lambda c: _reproduce_dir(c, args.preset))  # first: a bad flag fails before torch loads
    from mechgrok.reproduce.pipeline import reproduce

    try:
        result = reproduce(str(out), config=cfg, epochs=cfg.epochs, seeds=args.seeds, parallel=args.parallel,
                           threads=args.threads, device=args.device, progress_bar=not args.no_progress,
                           on_step=lambda message: print(f"[reproduce] {message}", flush=True))
    except KeyboardInterrupt as err:
        # the trainer wrote a resume checkpoint; the message says where it stopped, once
        print(f"interrupted{f': {err}' if str(err) else ''}; run the same command again to resume")
        return 130
    s = result.summary
    # the paper's numbers are for its p=113 addition run only
    is_paper = (cfg.p, cfg.op) == (113, "add")
    paper = f" (paper: {', '.join(map(str, nanda2023.KEY_FREQUENCIES))})" if is_paper else ""
    print(f"key frequencies: {', '.join(map(str, s['key_frequencies']))}{paper}")
    for row in s["phases_by_seed"]:
        if row["seed"] == "paper" and not is_paper:
            continue
        print(f"  phases, seed {row['seed']}: memorization ends {row['memorization_end']}, "
              f"circuit formation ends {row['circuit_formation_end']}, cleanup ends {row['cleanup_end']}")
    final = s["final"]
    print(f"final (epoch {final['epoch']}): test loss {final['test_loss']:.3g}, restricted loss {final['restricted_loss']:.3g}, "
          f"test accuracy {final['test_acc']:.4f}")
    print(f"wrote {result.report} and {result.summary_path} in {s['timings_s']['total']:.0f} s")
    return 0


def _apply(flags: list[str]) -> str:
    return "applies" if len(flags) == 1 else "apply"


def _nanda_only_flags(args: argparse.Namespace, work: str, doc: str) -> None:
    config_flags = [_flag(name) for name in _given_config(args)]
    other = [flag for flag, on in (("--preset", args.preset is not None), ("--paper", args.paper), ("--seeds", args.seeds != 1),
                                   ("--parallel", args.parallel is not None)) if on]
    if config_flags or other:
        flags = config_flags + other
        raise ValueError(f"{', '.join(flags)} {_apply(flags)} to the Nanda et al. reproduction only; the {work} "
                         f"reproduction's settings are its source's ({doc}). Drop {'it' if len(flags) == 1 else 'them'}")


def _reproduce_phase_changes(args: argparse.Namespace) -> int:
    _nanda_only_flags(args, "phase-changes", "docs/phase_changes.md")
    if args.executor == "ray":
        raise ValueError("--executor ray applies to pair2023; phase-changes trains on a local process pool (process) or "
                         "in this process (inline)")
    if args.digits is not None and args.digits < 1:
        raise ValueError(f"--digits {args.digits} must be >= 1 (the post: 5, and 15 for 16 phase changes)")
    from mechgrok.reproduce.phase_changes.pipeline import DEFAULT_OUT, reproduce_phase_changes
    from mechgrok.training.stack import resolve_device

    resolve_device(args.device)  # a device this machine lacks is refused before anything is written
    out = Path(args.out or DEFAULT_OUT)
    try:
        result = reproduce_phase_changes(out, full=args.full, n_digits=args.digits or 5, executor=args.executor,
                                         workers=args.workers, device=args.device, threads=args.threads,
                                         on_step=lambda message: print(f"[reproduce phase-changes] {message}", flush=True))
    except KeyboardInterrupt:
        print("interrupted; every finished run is kept and partial ones resume: run the same command again")
        return 130
    for claim, held in result.claims.items():
        print(f"  {'holds' if held else 'does NOT hold'}: {claim}")
    print(f"wrote {result.report} in {result.seconds['total']:.0f} s")
    return 0


def _reproduce_pair(args: argparse.Namespace) -> int:
    _nanda_only_flags(args, "PAIR", "docs/pair2023.md")
    from mechgrok.reproduce.pair_pipeline import DEFAULT_OUT, reproduce_pair
    from mechgrok.training.stack import resolve_device

    resolve_device(args.device)  # a device this machine lacks is refused before anything is written
    out = Path(args.out or DEFAULT_OUT)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder")
    try:
        result = reproduce_pair(out, full=args.full, executor=args.executor, workers=args.workers, device=args.device,
                                threads=args.threads, progress=not args.no_progress,
                                on_step=lambda message: print(f"[reproduce pair2023] {message}", flush=True))
    except KeyboardInterrupt:
        print("interrupted; every finished run is kept and partial ones resume: run the same command again")
        return 130
    s = result.summary
    grokked = s["main_grokked"]
    print(f"main MLP: {len(grokked)} of {len(s['main'])} seeds reached test accuracy 0.99 "
          + ", ".join(f"(seed {seed}: step {m['test_acc_step']:,})" for seed, m in s["main"].items() if m["test_acc_step"]))
    print(f"circle: {len(s['circle_solved'])} of {len(s['circle'])} seeds reached test accuracy 1.0")
    counts = ", ".join(f"{k} {v}" for k, v in s["regime_counts"].items())
    print(f"regimes ({len(s['regime_rows'])} models): {counts}")
    print(f"wrote {result.report} and {result.summary_path} in {result.seconds['total']:.0f} s")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from mechgrok import speed
    from mechgrok.reproduce.pipeline import write_ablation_tables

    with speed.torch_threads(args.threads):
        _, paths = write_ablation_tables(args.run, epoch=args.epoch, rule=args.rule, threshold=args.threshold, out=args.out)
    print(f"wrote {len(paths) - 1} CSV tables and {paths[-1].name} to {paths[-1].parent}")
    return 0


def _write_figure(out, args: argparse.Namespace) -> int:
    """Write a built figure into ``--out`` (default RUN/figures) and say what it shows and where."""
    from mechgrok.report import figures

    paths = figures.write_figure(out, args.run, args.out)
    print(f"{out.name}: {out.caption}")
    for path in paths:
        print(f"  wrote {path}")
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from mechgrok import speed
    from mechgrok.report import PAIR_FIGURE_NAMES, figures

    from mechgrok.report import PHASE_FIGURE_NAMES

    if args.name in PAIR_FIGURE_NAMES or args.name in PHASE_FIGURE_NAMES:
        if args.rule != "W_L" or args.threshold != 0.85:
            raise ValueError(f"--rule and --threshold apply to the Nanda et al. figures, not {args.name}; drop them")
        if args.name in PAIR_FIGURE_NAMES:
            from mechgrok.reproduce.pair_pipeline import make_figure
        else:
            from mechgrok.reproduce.phase_changes.pipeline import make_figure

        with speed.torch_threads(args.threads):
            out = make_figure(args.name, args.run)
        return _write_figure(out, args)
    with speed.torch_threads(args.threads):
        analysis = figures.RunAnalysis(args.run, rule=args.rule, threshold=args.threshold)
        out = figures.make_figure(args.name, analysis)
    return _write_figure(out, args)


_SWEEP_DEFAULTS = {"frac_train": [0.3, 0.4, 0.5, 0.6, 0.7], "weight_decay": [0.3, 1.0, 3.0]}


def cmd_sweep(args: argparse.Namespace) -> int:
    from mechgrok import speed
    from mechgrok.report import figures

    build = {"frac_train": figures.appendix_frac_train_sweep, "weight_decay": figures.appendix_weight_decay_sweep}[args.field]
    values = args.values or _SWEEP_DEFAULTS[args.field]
    # the sweep's trainers ask for the default thread count and so inherit this block's
    with speed.torch_threads(args.threads):
        out = build(args.run, values, args.epochs, progress_bar=not args.no_progress)
    return _write_figure(out, args)


def _add_analysis_flags(parser: argparse.ArgumentParser, out_default: str) -> None:
    parser.add_argument("--run", type=_path("--run"), required=True, help="run folder (mechgrok train / mechgrok reproduce --out RUN)")
    parser.add_argument("--rule", default="W_L",
                        help="key-frequency rule: W_L (default, the paper's definition), original (the original code's: "
                        "every neuron's best frequency), clusters or W_E (mechgrok's; docs/ablations.md)")
    parser.add_argument("--threshold", type=_number("--threshold", float, 0.85), default=0.85,
                        help="neuron-cluster threshold (default: 0.85)")
    parser.add_argument("--out", type=_path("--out"), default=None, help=f"output folder (default: RUN/{out_default})")
    _add_threads_flag(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mechgrok", description="Mechanistic interpretability of grokking.")
    sub = parser.add_subparsers(dest="command", required=True)

    # short usage lines: the full flag list is in --help, and an error should end on its message
    p_train = sub.add_parser("train", help="train (or resume) a run; Ctrl-C saves a checkpoint",
                             usage="%(prog)s [--preset NAME] [config flags] [--out RUN] [--device D] [--threads N] "
                             "[--no-progress]",
                             description="Train a run into a run folder, or continue the run already there with "
                             "its saved config (flags given here override it).")
    _add_preset_flag(p_train)
    _add_config_flags(p_train)
    p_train.add_argument("--out", type=_path("--out"), help="run folder (default: runs/<op>-p<p>-frac<frac>-seed<seed>, "
                         "with --preset NAME runs/NAME-<op>-p<p>-frac<frac>-seed<seed>)")
    p_train.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda (the families without a "
                         "fast step; the transformer's fast step is CPU-only)")
    p_train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_threads_flag(p_train)
    p_train.set_defaults(func=cmd_train)

    p_info = sub.add_parser("info", help="describe a run folder or checkpoint file")
    p_info.add_argument("path", type=_path("the path"), help="run folder, .safetensors checkpoint, or a foreign .pth file")
    p_info.set_defaults(func=cmd_info)

    p_import = sub.add_parser("import", help="turn a TransformerLens Grokking-demo .pth or the original paper's "
                              "full_run_data.pth into a mechgrok run folder (docs/formats.md)")
    p_import.add_argument("file", type=_path("the file"), help="the foreign .pth file")
    p_import.add_argument("--out", type=_path("--out"), required=True, help="the new run folder (must not exist, or be empty)")
    p_import.set_defaults(func=cmd_import)

    from mechgrok.reproduce.nanda2023 import EPOCHS as PAPER_EPOCHS

    p_rep = sub.add_parser("reproduce", help="reproduce a source work: nanda2023 (default: train the paper's mainline "
                           "or reuse it, progress measures, every figure, the ablation table) or pair2023 (Pearce et "
                           "al.'s explorable: every experiment as a sweep); writes report.html + summary.json",
                           usage="%(prog)s [nanda2023] [--preset NAME] [config flags] [--out RUN] [--paper] [--seeds S] "
                           "[--parallel J] [--device D] [--threads N] [--no-progress]\n       %(prog)s pair2023|phase-changes [--full] [--digits N] "
                           "[--out DIR] [--executor E] [--workers W] [--device D] [--threads N]",
                           description="nanda2023 takes every config flag of `mechgrok train`; on an existing "
                           "run folder its saved config is used and the given flags override it. pair2023 runs the "
                           "explorable's settings (docs/pair2023.md) and reuses every finished run.")
    p_rep.add_argument("work", nargs="?", choices=_WORKS, default="nanda2023",
                       help="the source work to reproduce (default: nanda2023); phase-changes: Nanda's Alignment Forum "
                       "post (sequence tasks, slingshots, weight decay, more data, the 2-layer MLP)")
    _add_preset_flag(p_rep)
    _add_config_flags(p_rep)
    p_rep.add_argument("--out", type=_path("--out"), default=None, help="run folder (default: runs/mainline for the paper's settings, "
                       "runs/NAME for --preset NAME's, else runs/<op>-p<p>-frac<frac>-seed<seed>)")
    p_rep.add_argument("--paper", action="store_true", help=f"train the paper's full {PAPER_EPOCHS:,} epochs")
    p_rep.add_argument("--seeds", type=_number("--seeds", int, 1, minimum=1), default=1,
                       help="seeds to train, one after another (default: 1); Fig. 2 shades the spread")
    p_rep.add_argument("--parallel", type=_number("--parallel", int, 1, minimum=1), default=None,
                       help="train this many seeds at once in separate processes, each on --threads threads; 1: one "
                       "after another (default: one process per usable core, since 2 single-thread processes give "
                       "~1.2x the throughput of one 2-thread process; with --device cuda all seeds train in one stack)")
    p_rep.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda. nanda2023: every seed "
                       "trains in one stacked program on the GPU (TF32 off) and the progress measures run there; "
                       "pair2023 and phase-changes: their trainers")
    p_rep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    pair = p_rep.add_argument_group("pair2023 and phase-changes only")
    pair.add_argument("--full", action="store_true", help="pair2023: train the whole 1,125-model regime sweep (about 3 h "
                      "on 2 cores; default: the 45-model slice of docs/pair2023.md); phase-changes: the post's own sizes "
                      "(d_model 512 addition, p=113, ...; docs/phase_changes.md)")
    pair.add_argument("--executor", choices=("inline", "process", "ray"), default="process",
                      help="who trains the sweeps: a local process pool (default), this process, or Ray "
                      "(pip install 'mechgrok[ray]'; RAY_ADDRESS picks the cluster)")
    pair.add_argument("--workers", type=_number("--workers", int, 2, minimum=1), default=None,
                      help="parallel training tasks (default: the CPUs this process may use)")
    pair.add_argument("--digits", type=_number("--digits", int, 5, minimum=1), default=None,
                      help="phase-changes only: digits of the addition experiment (default: 5; the post: 15-digit "
                      "addition shows 16 phase changes)")
    _add_threads_flag(p_rep)
    p_rep.set_defaults(func=cmd_reproduce)

    p_table = sub.add_parser("table", help="write the reverse-engineering tables of a run (§4.4, Fig. 6, Table 1, "
                             "clusters, headline numbers beside the paper's) to RUN/analysis")
    _add_analysis_flags(p_table, "analysis")
    p_table.add_argument("--epoch", type=_number("--epoch", int, 0, minimum=0), default=None,
                         help="checkpoint epoch (default: the newest)")
    p_table.set_defaults(func=cmd_table)

    from mechgrok.report import FIGURE_NAMES, PAIR_FIGURE_NAMES, PHASE_FIGURE_NAMES

    p_fig = sub.add_parser("figure", help="build one figure of a run into RUN/figures (HTML and its data as CSV); "
                           "the PAIR figures read a `mechgrok reproduce pair2023` folder as RUN")
    p_fig.add_argument("name", choices=FIGURE_NAMES + PAIR_FIGURE_NAMES + PHASE_FIGURE_NAMES,
                       help="the figure: Nanda et al.'s (fig2_... appendix_...), Pearce et al.'s (loss_curves ... "
                       "no_weight_decay; RUN: a `reproduce pair2023` folder) or the Alignment Forum post's (addition_digits ...; "
                       "RUN: a `reproduce phase-changes` folder)")
    _add_analysis_flags(p_fig, "figures")
    p_fig.set_defaults(func=cmd_figure)

    p_sweep = sub.add_parser("sweep", help="opt-in appendix sweeps: train one run per value of a config field with "
                             "RUN's other settings, then plot their test loss and accuracy")
    p_sweep.add_argument("field", choices=tuple(_SWEEP_DEFAULTS), help="the config field to sweep")
    p_sweep.add_argument("--run", type=_path("--run"), required=True, help="run folder whose settings the sweep copies")
    p_sweep.add_argument("--values", type=_number("--values", float, 0.3), nargs="+", default=None,
                         help="values to try (default: " + "; ".join(f"{k} {' '.join(map(str, v))}" for k, v in _SWEEP_DEFAULTS.items()) + ")")
    p_sweep.add_argument("--epochs", type=_number("--epochs", int, 5000, minimum=1), default=5000,
                         help="epochs per run (default: 5000)")
    p_sweep.add_argument("--out", type=_path("--out"), default=None, help="output folder (default: RUN/figures)")
    p_sweep.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _add_threads_flag(p_sweep)
    p_sweep.set_defaults(func=cmd_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"mechgrok: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader of our output went away (e.g. `mechgrok ... | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:
        # a file that cannot be read or written (a folder where a file should be, a symlink loop,
        # no permission, a full disk): every mechgrok write is atomic, so the files are intact
        where = f"{err.filename}: " if err.filename else ""
        print(f"mechgrok: error: {where}{err.strerror or err}; files already on disk are intact", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C outside the trainer's own handler (while loading, or between two steps of a
        # command): every file is written atomically, so what is on disk is intact.
        print("interrupted; files on disk are intact: run the same command again to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
