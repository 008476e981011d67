"""Induction-circuit progress measures: each head's previous-token and induction scores.

Two scores per head, each a number in [0, 1], averaged over a batch of sequences:

* ``previous_token``: the share of a head's attention that goes from each position to the one
  before it;
* ``induction``: the share that goes from each position to the token after an earlier copy of
  the current token (where a head completing an induction circuit looks).

Both use TransformerLens's own head detector: its detection patterns
(``get_previous_token_head_detection_pattern``, ``get_induction_head_detection_pattern``) and its
"mul" score (``compute_head_attention_similarity_score``: the attention on the pattern's cells
over all attention), computed here for a whole batch at once; ``tests/test_induction.py`` pins
the batched scores to TransformerLens's own, sequence by sequence.

``repeat_induction`` is the score on the repeated-subsequence task itself: at each scored
position of the repeat, the attention to the position just after its earlier copy (the one
token an induction head should attend to), averaged; it ignores the chance duplicates of
random tokens that the detector's pattern also counts.
"""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechgrok import runs
from mechgrok.models.lens import get_induction_head_detection_pattern, get_previous_token_head_detection_pattern
from mechgrok.tasks.sequence import InductionTask

__all__ = ["attention_patterns", "detection_patterns", "head_scores", "repeat_induction", "earlier_copy", "score_table", "score_curves", "SCORES_FILE", "MEASURES"]

MEASURES = ("previous_token", "induction", "repeat_induction")
SCORES_FILE = "head_scores.csv"  # the cache of score_curves in an induction run's folder


@torch.no_grad()
def attention_patterns(model, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "layer batch head query_pos key_pos"]:
    """Every layer's attention pattern on ``tokens``."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return torch.stack([cache[name] for name in names])


def detection_patterns(tokens: Int[Tensor, "batch pos"]) -> dict[str, Float[Tensor, "batch query_pos key_pos"]]:
    """TransformerLens's previous-token and induction detection patterns, one per sequence."""
    tokens = tokens.cpu()
    prev = get_previous_token_head_detection_pattern(tokens[0])
    return {
        "previous_token": prev.expand(len(tokens), *prev.shape).clone(),
        "induction": torch.stack([get_induction_head_detection_pattern(seq) for seq in tokens]).float(),
    }


def head_scores(patterns: Float[Tensor, "layer batch head query_pos key_pos"], detection: Float[Tensor, "batch query_pos key_pos"]
                ) -> Float[Tensor, "layer head"]:
    """TransformerLens's "mul" score of every head against one detection pattern per sequence,
    averaged over the sequences (detect_head averages over a list of prompts the same way)."""
    on = (patterns * detection.to(patterns)[None, :, None]).sum((-1, -2))
    total = patterns.sum((-1, -2))
    return (on / total).mean(1)


def repeat_induction(patterns: Float[Tensor, "layer batch head query_pos key_pos"], tokens: Int[Tensor, "batch pos"],
                     labels: Int[Tensor, "batch loss_pos"], task: InductionTask) -> Float[Tensor, "layer head"]:
    """The attention from each scored position of the repeat to the token after its earlier copy."""
    L = task.repeat_len
    second = task.repeat_starts(labels)  # where the repeat starts (its first scored position)
    first = earlier_copy(tokens, second, L)
    offsets = torch.arange(L - 1)
    rows = torch.arange(len(tokens))[:, None]
    queries, keys = second[:, None] + offsets, first[:, None] + offsets + 1
    return patterns[:, rows, :, queries, keys].mean((1, 2))  # picked: [layer, batch, L - 1, head]


def earlier_copy(tokens: Int[Tensor, "batch pos"], second: Int[Tensor, "batch"], length: int) -> Int[Tensor, "batch"]:
    """Where the earlier copy of each sequence's repeat (``length`` tokens from ``second``) starts."""
    windows = tokens.unfold(1, length, 1)  # [batch, start, length]
    rows = torch.arange(len(tokens))
    repeat = windows[rows, second]
    starts = torch.arange(windows.shape[1])
    match = (windows == repeat[:, None]).all(-1) & (starts[None] <= (second - length)[:, None])
    if not bool(match.any(1).all()):
        raise ValueError("a sequence has no earlier copy of its repeat; these are not the induction task's sequences")
    return match.long().argmax(1)


@torch.no_grad()
def score_table(model, tokens: Int[Tensor, "batch pos"], labels: Int[Tensor, "batch loss_pos"], task: InductionTask,
                detection: dict[str, Tensor] | None = None) -> pd.DataFrame:
    """One row per (layer, head): its previous_token, induction and repeat_induction scores on these
    sequences. ``detection``: :func:`detection_patterns` of ``tokens``, when already computed (they
    depend on the tokens only, and take most of the time)."""
    if not isinstance(task, InductionTask):
        raise ValueError(f"score_table reads the repeated-subsequence task's sequences, not {type(task).__name__}'s")
    patterns = attention_patterns(model, tokens).cpu().double()
    detection = detection_patterns(tokens) if detection is None else detection
    scores = {name: head_scores(patterns, pattern) for name, pattern in detection.items()}
    scores["repeat_induction"] = repeat_induction(patterns, tokens.cpu(), labels.cpu(), task)
    n_layers, n_heads = scores["induction"].shape
    return pd.DataFrame([
        {"layer": layer, "head": head, **{m: float(scores[m][layer, head]) for m in MEASURES}}
        for layer in range(n_layers) for head in range(n_heads)
    ])


def score_curves(run_dir, n_sequences: int = 200) -> pd.DataFrame:
    """Every head's scores (:data:`MEASURES`) at every checkpoint of an induction run, on its first
    ``n_sequences`` test sequences: epoch, layer, head, the scores. Cached in ``RUN/head_scores.csv``
    and recomputed when the run's checkpoints or ``n_sequences`` change."""
    from pathlib import Path

    from mechgrok.tasks.data import run_data

    run = runs.load_run(run_dir)
    if run.config.task != "induction":
        raise ValueError(f"{run_dir} trained task={run.config.task!r}; head scores are read on the induction task")
    cache = Path(run_dir) / SCORES_FILE
    epochs = run.checkpoint_epochs
    if cache.exists():
        saved = pd.read_csv(cache)
        if sorted(saved.epoch.unique().tolist()) == epochs and saved.get("n_sequences", pd.Series([None])).iloc[0] == n_sequences:
            return saved.drop(columns="n_sequences")
    data = run_data(run.config)
    test = data.split.test[:n_sequences]
    tokens, labels = data.tokens[test], data.labels[test]
    detection = detection_patterns(tokens)
    frames = [score_table(run.load_epoch(e), tokens, labels, data.task, detection).assign(epoch=e) for e in epochs]
    table = pd.concat(frames, ignore_index=True)[["epoch", "layer", "head", *MEASURES]]
    runs.atomic_write_text(cache, table.assign(n_sequences=n_sequences).to_csv(index=False))
    return table
