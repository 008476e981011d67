"""Named settings of whole runs: the anchor runs' own setups as configs (docs/fidelity.md).

* ``paper``: ``Config()``, mechgrok's mainline: the paper's model, optimiser and warm-up, with
  mechgrok's split (``torch.randperm``), init (N(0, 1/d_model) in HookedTransformer order) and a
  p-wide unembed.
* ``original``: the original code's run (Nanda et al.'s released code): a p + 1 wide unembed
  whose softmax includes ``=``, Python's ``random.shuffle`` split, the original module's init,
  50k epochs.
* ``tl-demo``: TransformerLens's Grokking_Demo: TransformerLens's init with seed 999, the split
  of ``torch.manual_seed(598); torch.randperm(p*p)``, no warm-up, every bias frozen, 25k epochs,
  the test loss every epoch.

``preset_config(name, **overrides)`` is the preset's config with ``overrides`` on top (the
command line's ``--preset NAME`` and explicit flags); another ``seed`` moves the seeds a preset
pins with it (:func:`preset_fields`). Each preset lists every field it sets,
including those equal to ``Config()``'s, so that it reads as the anchor's settings.

This module imports no torch, so the command line starts fast.
"""

from __future__ import annotations

from typing import Any

from mechgrok.config import Config

__all__ = ["PRESETS", "PRESET_DESCRIPTIONS", "preset_config", "preset_fields"]

# Settings every anchor shares: the paper's task, model, optimiser and precision.
_SHARED: dict[str, Any] = {
    "task": "modular", "p": 113, "op": "add", "frac_train": 0.3, "pairs": "ordered",
    "family": "transformer", "d_model": 128, "n_heads": 4, "d_mlp": 512, "act_fn": "relu",
    "lr": 1e-3, "weight_decay": 1.0, "beta1": 0.9, "beta2": 0.98, "decay": "l2", "loss_scale": "mean",
    "loss_dtype": "float64", "batch_size": 0, "checkpoint_every": 100,
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "original": {
        **_SHARED,
        "seed": 0, "split": "python", "split_seed": None,
        "init": "original", "model_seed": None, "unembed_equals": True, "frozen_biases": "non_mlp",
        "warmup_steps": 10, "epochs": 50_000, "eval_every": 10,
    },
    "tl-demo": {
        **_SHARED,
        "seed": 0, "split": "torch", "split_seed": 598,
        "init": "transformer_lens", "model_seed": 999, "unembed_equals": False, "frozen_biases": "all",
        "warmup_steps": 0, "epochs": 25_000, "eval_every": 1,
    },
}

PRESET_DESCRIPTIONS: dict[str, str] = {
    "paper": "mechgrok's mainline, Config() (the paper's model and optimiser; mechgrok's split and init)",
    "original": "the original code's run: 114-wide unembed, random.shuffle split, its init and warm-up, 50k epochs",
    "tl-demo": "TransformerLens's Grokking_Demo: its init (seed 999), split (seed 598), no warm-up, biases frozen, 25k epochs",
}


def preset_fields(name: str, seed: int | None = None) -> dict[str, Any]:
    """The config fields preset ``name`` sets (``{}`` for ``paper``: ``Config()`` itself).

    With ``seed``, the preset's run for that seed: a pinned ``split_seed`` or ``model_seed`` (the
    tl-demo's 598 and 999) moves with it as :meth:`mechgrok.config.Config.reseeded` moves them, so
    seed 0 is the anchor's own run and every other seed differs in its split and init.
    """
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is not one of {sorted(PRESETS)}; pass e.g. preset='original' "
                         f"({'; '.join(f'{k}: {v}' for k, v in PRESET_DESCRIPTIONS.items())})")
    fields = dict(PRESETS[name])
    if seed is not None:
        moved = Config(**fields).reseeded(seed)
        fields.update({k: getattr(moved, k) for k in ("seed", "split_seed", "model_seed") if k in fields or k == "seed"})
    return fields


def preset_config(name: str, **overrides: Any) -> Config:
    """Preset ``name``'s config for ``overrides.get("seed")`` (:func:`preset_fields`) with
    ``overrides`` on top; an explicit ``split_seed`` or ``model_seed`` wins.

    >>> preset_config("original", seed=3).split, preset_config("tl-demo").model_seed, preset_config("tl-demo", seed=2).model_seed
    ('python', 999, 1001)
    """
    return Config(**{**preset_fields(name, overrides.get("seed")), **overrides})
