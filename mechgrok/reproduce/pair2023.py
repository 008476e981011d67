"""Pearce et al., *Do Machine Learning Models Memorize or Generalize?* (PAIR explorable, 2023):
the settings of each of its experiments, as Configs, and what the explorable states, in one place.

Settings come from the explorable's text and its public training code (docs/pair2023.md gives
each field and its source). The explorable trained in float32, so every preset here computes
its loss in float32 (``loss_dtype``), and the main model minimises the explorable's loss, the
mean over all p outputs of one-hot × log-softmax (``loss_scale='per_output'``: cross-entropy / p).

The analyses never import this module; :mod:`mechgrok.reproduce.pair_pipeline` and the report
put the explorable's statements beside our numbers. Imports no torch.
"""

from __future__ import annotations

from mechgrok.config import Config

__all__ = [
    "MODULUS",
    "main_config",
    "variant_config",
    "no_weight_decay_config",
    "circle_config",
    "parity_config",
    "sweep_base",
    "SWEEP_AXES",
    "SLICE_AXES",
    "VARIANT_FAMILIES",
    "EXPLORABLE",
]

MODULUS = 67

# The main model: a+b mod 67, 24 neurons, a tied embedding 500 wide, no biases; AdamW lr 1e-3,
# weight decay 1, betas (0.9, 0.98); full batch; 50k steps; 40% of the pairs a <= b.
_MAIN = dict(
    p=MODULUS, op="add", pairs="unordered", frac_train=0.4, family="mlp", d_model=500, d_mlp=24,
    lr=1e-3, weight_decay=1.0, beta1=0.9, beta2=0.98, warmup_steps=0, loss_dtype="float32",
    loss_scale="per_output", epochs=50_000, eval_every=100, checkpoint_every=1_000,
)

VARIANT_FAMILIES = ("mlp_unfactored", "mlp_collapsed_in", "mlp_collapsed_out")


def main_config(seed: int = 0, **changes) -> Config:
    """The explorable's main a+b mod 67 MLP (its first figures, the stars and the logit waves)."""
    return Config(**{**_MAIN, "seed": seed, **changes})


def variant_config(family: str, seed: int = 0, **changes) -> Config:
    """The main model with one or both sides unfactored ("Which Model Constraints Work Best?")."""
    if family not in VARIANT_FAMILIES + ("mlp",):
        raise ValueError(f"family={family!r} is not one of the variants {list(VARIANT_FAMILIES)}")
    return main_config(seed, family=family, **changes)


def no_weight_decay_config(seed: int = 0, **changes) -> Config:
    """The main model without weight decay. The explorable shows a smaller model, whose settings it
    does not give, start to generalise and then memorise; this preset is the main model itself."""
    return main_config(seed, weight_decay=0.0, **changes)


# The constructed circle: frozen (cos, sin) embedding, 5 neurons; only W_in-proj and W_out-proj
# train, weight decay 0.001, lr 1e-2, 15k steps, 30% of the pairs.
_CIRCLE = dict(
    p=MODULUS, op="add", pairs="unordered", frac_train=0.3, family="circle", d_model=2, d_mlp=5, act_fn="relu",
    lr=1e-2, weight_decay=1e-3, beta1=0.9, beta2=0.98, warmup_steps=0, loss_dtype="float32",
    loss_scale="per_output", epochs=15_000, eval_every=100, checkpoint_every=1_000,
)


def circle_config(seed: int = 0, **changes) -> Config:
    return Config(**{**_CIRCLE, "seed": seed, **changes})


# "1s and 0s": 30 bits, the parity of the first 3, a fixed train set of 1,200, L1 weight decay.
_PARITY = dict(
    task="parity", family="parity_mlp", n_bits=30, parity_bits=3, n_train=1_200, n_test=5_000, d_mlp=32,
    lr=3e-3, weight_decay=1e-4, decay="l1", beta1=0.99, beta2=0.98, warmup_steps=0, loss_dtype="float32",
    epochs=3_000, eval_every=10, checkpoint_every=250,
)


def parity_config(seed: int = 0, **changes) -> Config:
    """The sparse-parity MLP with L1 weight decay (the explorable's "1s and 0s" figures)."""
    return Config(**{**_PARITY, "seed": seed, **changes})


# The regime sweep: AdamW with L2 weight decay, lr 3e-3, betas (0.99, 0.98), 20k steps, test
# set 5,000, logged every 100 steps.
def sweep_base(**changes) -> Config:
    fields = {**_PARITY, "decay": "l2", "weight_decay": 0.1, "n_train": 1_000, "d_mlp": 16,
              "epochs": 20_000, "eval_every": 100, "checkpoint_every": 20_000, **changes}
    return Config(**fields)


# 5 train sizes x 5 hidden sizes x 5 weight decays x 9 seeds = 1,125 models.
SWEEP_AXES: dict[str, tuple] = {
    "n_train": (750, 1000, 1250, 1500, 1750),
    "d_mlp": (16, 32, 64, 128, 258),  # 258, not 256, in the explorable's own data
    "weight_decay": (0.01, 0.03, 0.1, 0.3, 1.0),
    "seed": tuple(range(9)),
}
# The default slice: one cell row (train 1,000, hidden 16) over all weight decays and seeds.
SLICE_AXES: dict[str, tuple] = {
    "n_train": (1000,),
    "d_mlp": (16,),
    "weight_decay": SWEEP_AXES["weight_decay"],
    "seed": SWEEP_AXES["seed"],
}

# What the explorable states, in its own words' numbers (checked against ours in the report).
EXPLORABLE = {
    "main_frequencies": [4, 5, 7, 26],  # the frequencies of the run it shows ("nothing magical")
    "frequency_count_share": {3: 0.61, 4: 0.37},  # over 450 seeds: 3 frequencies in 61%, 4 in 37%
    "circle_neurons": 5,  # "with just five neurons the model finds a solution with perfect accuracy"
    "circle_rotation_ratio": 2.0,  # "W_out-proj is rotating around the circle twice as fast"
    "sweep_models": 1_125,
    "sweep_seeds_per_cell": 9,
    # "too little weight decay ... can't escape overfitting; more ... generalize after memorizing;
    # even more ... test and train loss fall together; too much ... fail": the regimes, in the
    # order they appear as weight decay grows
    "regime_order_by_weight_decay": ["memorize", "grok", "generalize", "fail"],
    "unfactored_generalises": False,  # "does not actually result in generalization ... even with weight decay"
    "x2_exact_for_neurons_above": 4,  # "the argmax is a + b mod M for N > 4" (Appendix A)
}
