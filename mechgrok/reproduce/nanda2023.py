"""Every number of Nanda et al., *Progress measures for grokking via mechanistic
interpretability* (ICLR 2023), that mechgrok compares its own runs with, in one place.

All are for the paper's p=113 mainline run. Where the paper gives no number, the value is NaN.
The analyses never import this module; :mod:`mechgrok.reproduce.pipeline` and the report put
these numbers beside ours.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "KEY_FREQUENCIES",
    "FINAL_LOSS",
    "PHASE_BOUNDARIES",
    "SECTION_4_4",
    "HEADLINE",
    "CLUSTER_SIZES",
    "EPOCHS",
    "FRAC_TRAIN_GROKS",
    "FRAC_TRAIN_GENERALIZES_AT_ONCE",
    "with_published",
]

# §4: the mainline's key frequencies.
KEY_FREQUENCIES = [14, 35, 41, 42, 52]
# The mainline's final loss on all p² inputs.
FINAL_LOSS = 2.41e-7
# The full training run, in epochs.
EPOCHS = 40_000
# §5.2: the hand-drawn phase lines, in epochs.
PHASE_BOUNDARIES = {"memorization_end": 1400, "circuit_formation_end": 9400, "cleanup_end": 14000}
# §4.2: neurons per key-frequency cluster (14, 35, 41, 42, 52), then those in none.
CLUSTER_SIZES = {14: 44, 35: 93, 41: 145, 42: 87, 52: 64, "other": 79}
# Appendix, training-fraction sweep: fractions in this range grok after a delay; from this one up
# the model generalizes at once.
FRAC_TRAIN_GROKS = (0.3, 0.5)
FRAC_TRAIN_GENERALIZES_AT_ONCE = 0.6

# §4.4: losses on all p² inputs, keyed by the intervention names of
# mechgrok.analysis.ablations.section_4_4_table.
SECTION_4_4: dict[str, float] = {
    "original": 2.41e-7,
    "clustered neurons -> single-frequency degree-2 approximation": 2.48e-7,
    "neurons: keep only cos/sin(w_k(a+b)) of key frequencies": 5.54e-8,
    "MLP output projected onto the 2K W_L directions": 1.19e-7,
    "MLP output projected onto the null space of the W_L directions": 5.27,
    "logits: keep only the 2D terms of key frequencies": 7.24e-8,
    "logits: keep only cos/sin(w_k(a+b)) of key frequencies (restricted loss)": float("nan"),
    "logits: remove cos/sin(w_k(a+b)) of key frequencies": float("nan"),
}

# Single numbers of §4, keyed by the quantities of mechgrok.analysis.tables' headline table. The
# paper's W_L residual ("0.55% of its norm") is ambiguous, so it stands beside both of ours.
HEADLINE: dict[str, float] = {
    "loss (all inputs)": 2.41e-7,
    "restricted loss": float("nan"),
    "excluded loss (train)": float("nan"),
    "W_L rank-2K residual, fraction of the norm": 0.0055,
    "W_L rank-2K residual, fraction of the squared norm": 0.0055,
    "logit fit Σ α_k cos(w_k(a+b-c)): FVE": 0.95,
    "logit fit: loss of the approximation": 4.7e-8,
    "neurons explained > threshold (fraction)": 433 / 512,
    "Table 1 FVE (min)": 0.93,
    "Table 1 FVE (max)": 0.98,
    "attention = -> a: FVE of one-frequency wave (min over heads)": 0.979,
    "attention = -> a: FVE of one-frequency wave (max over heads)": 0.991,
    "attention = -> = (max head mean)": 0.004,
}


def with_published(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The tables of :func:`mechgrok.analysis.tables.ablation_tables` with the paper's numbers
    beside ours: ``paper_loss`` in ``section_4_4``, ``paper`` in ``headline``."""
    out = dict(tables)
    if "section_4_4" in out:
        section = out["section_4_4"]
        paper = section["intervention"].map(lambda name: SECTION_4_4.get(name, float("nan")))
        out["section_4_4"] = section.assign(paper_loss=paper)[
            ["intervention", "loss", "paper_loss", *[c for c in section.columns if c not in ("intervention", "loss")]]
        ]
    if "headline" in out:
        headline = out["headline"]
        out["headline"] = headline.assign(paper=headline["quantity"].map(lambda q: HEADLINE.get(q, float("nan"))))
    return out
