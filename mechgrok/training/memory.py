"""Will a run fit in this machine's memory? An estimate made before anything is built or written.

``estimate_bytes(cfg)`` counts what training holds: the weights with their gradients, AdamW's
two moments and a checkpoint's copy (5 copies of the parameters), every example's tokens and
labels, and the activations of a full-batch step over every example (the residual stream,
attention, the MLP's hidden layer, and the logits in the loss precision, each with its
gradient). It is meant to be a generous upper bound for the models mechgrok trains: the paper's
p=113 run is estimated at a few hundred MB and takes less. :func:`check_fits` refuses configs
whose estimate exceeds the machine's memory (the smaller of its RAM and its cgroup limit), so
``--p 100003`` or ``--d-mlp 1000000000`` stops at once with the estimate, instead of in an
allocation traceback after writing a split.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from mechgrok.config import Config

__all__ = ["estimate_bytes", "machine_memory", "check_fits", "n_parameters"]

_FLOAT = 4  # float32 weights and activations
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _n_examples(cfg: Config) -> int:
    if cfg.task == "modular":
        return cfg.p * cfg.p
    return (cfg.batch_size if cfg.data == "fresh" else cfg.n_train) + cfg.n_test


def n_parameters(cfg: Config) -> int:
    """An upper bound on the parameters of a model of ``cfg`` (exact for the 1-layer transformer)."""
    d, m, layers = cfg.d_model, cfg.d_mlp, cfg.n_layers
    block = 4 * d * d + 4 * d + (0 if cfg.attn_only else 2 * d * m + m + d)
    return cfg.d_vocab * d + cfg.n_ctx * d + layers * block + d * cfg.d_vocab_out + cfg.d_vocab_out


def estimate_bytes(cfg: Config) -> int:
    """A generous estimate of the memory that training ``cfg`` takes, in bytes (module docstring)."""
    loss = 8 if cfg.loss_dtype == "float64" else 4
    per_example = (
        cfg.n_layers * cfg.n_ctx * (6 * cfg.d_model + 2 * cfg.n_heads * cfg.n_ctx) * _FLOAT  # residual, q, k, v, z, patterns
        + cfg.n_layers * 2 * cfg.d_mlp * _FLOAT * 2  # MLP pre- and post-activation, and their gradients
        + 3 * cfg.d_vocab_out * loss  # logits, log-probabilities, their gradient
        + 8 * (cfg.n_ctx + 2)  # tokens and labels (int64), and the split's index
    )
    return 5 * n_parameters(cfg) * _FLOAT + _n_examples(cfg) * per_example


def machine_memory() -> int:
    """This machine's memory in bytes: its RAM, or its cgroup's limit if that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for name in _CGROUP_LIMITS:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n < 2**50 else f"{n / 2**50:,.0f} PiB"


def check_fits(cfgs: Sequence[Config]) -> None:
    """Raise ``ValueError`` if training ``cfgs`` together needs more than this machine's memory."""
    need = sum(estimate_bytes(cfg) for cfg in cfgs)
    have = machine_memory()
    if need <= have:
        return
    big = max(cfgs, key=estimate_bytes)
    sizes = (f"p={big.p}, " if big.task == "modular" else "") + f"d_model={big.d_model}, d_mlp={big.d_mlp}"
    what = f"{len(cfgs)} runs" if len(cfgs) > 1 else "this run"
    raise ValueError(
        f"{what} ({sizes}) would need about {_gib(need)} of memory (mechgrok.training.memory.estimate_bytes: "
        f"{_n_examples(big):,} examples, {n_parameters(big):,} parameters), but this machine has {_gib(have)}; "
        "nothing was written. Pass a smaller p, d_model or d_mlp"
    )
