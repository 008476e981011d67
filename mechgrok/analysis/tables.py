"""The reverse-engineering tables of one trained model (Nanda et al. §4), as DataFrames.

:func:`ablation_tables` reads a model once and returns:

* ``headline``         single numbers (loss, restricted/excluded loss, W_L residual, logit fit,
                       neuron clusters, Table 1 range, attention)
* ``key_frequencies``  the key frequencies by every rule (the one used is marked)
* ``section_4_4``      the §4.4 ablations
* ``frequencies``      Fig. 6: loss with each frequency removed from the logits, plus the loss
                       with everything but the key frequencies removed
* ``table_1``          Table 1: fits of u_k·MLP and v_k·MLP by cos/sin(w_k(a+b))
* ``cluster_sizes``, ``clusters``, ``logit_fit_alpha``, ``attention``

Valid for runs of op='add' and op='sub' (whose tables use a-b where the paper has a+b, and say
so in their labels); any other operation raises ``ValueError``.

The published numbers to set beside them live in :mod:`mechgrok.reproduce.nanda2023`.
:func:`markdown` renders a table for the Markdown page that the pipeline writes.
"""

from __future__ import annotations

import pandas as pd
import torch

from mechgrok.analysis import ablations, circuits
from mechgrok.runs import attached
from mechgrok.tasks.modular import require_fourier

__all__ = ["TABLES", "ablation_tables", "markdown"]

TABLES = ("headline", "key_frequencies", "section_4_4", "frequencies", "table_1", "cluster_sizes", "clusters",
          "logit_fit_alpha", "attention")


def ablation_tables(
    model: torch.nn.Module, *, rule: str = circuits.DEFAULT_KEY_FREQUENCY_RULE, threshold: float = 0.85
) -> dict[str, pd.DataFrame]:
    """Every table of the module docstring for ``model`` (which must carry its task and split)."""
    sign = require_fourier(attached(model).task, "ablation_tables")
    acts = circuits.gather_activations(model)
    key = circuits.key_frequencies(acts, rule, threshold=threshold)
    clusters = circuits.neuron_clusters(acts.neurons, threshold)
    sizes = circuits.cluster_sizes(clusters)
    wl_fit = circuits.neuron_logit_fit(acts.W_L, key)
    table_1 = circuits.mlp_direction_fits(acts.neurons, wl_fit, sign=sign)
    logit_fit = circuits.logit_cos_fit(acts.logits, acts.labels, key, sign=sign)
    # the MLP families have no attention: their table is empty
    attention = pd.DataFrame() if acts.attention is None else circuits.attention_readout(acts.attention).table

    section = ablations.section_4_4_table(model, key, circuits.clustered_neurons(clusters), wl_fit.directions)
    frequencies = ablations.frequency_ablation_losses(acts.logits, acts.labels, acts.split, key, sign=sign)
    restricted = ablations.restricted_loss(acts.logits, acts.labels, key, sign=sign)
    keep_key = ablations.score(ablations.restricted_logits(acts.logits, key, sign=sign), acts.labels, acts.split)
    frequencies = pd.concat(
        [
            frequencies.astype({"frequency": object}),
            pd.DataFrame([{"frequency": "all but key", "key": False, "loss_all": keep_key.loss_all,
                           "loss_train": keep_key.loss_train, "loss_test": keep_key.loss_test}]),
        ],
        ignore_index=True,
    )
    rules = pd.DataFrame(
        [{"rule": r, "used": r == rule, "frequencies": " ".join(map(str, circuits.key_frequencies(acts, r, threshold=threshold))),
          "description": circuits.KEY_FREQUENCY_RULES[r]} for r in circuits.KEY_FREQUENCY_RULES]
    )
    original = ablations.score(acts.logits, acts.labels, acts.split)
    ours = {
        "loss (all inputs)": original.loss_all,
        "restricted loss": restricted,
        "excluded loss (train)": ablations.excluded_loss(acts.logits, acts.labels, key, acts.split.train, sign=sign),
        "W_L rank-2K residual, fraction of the norm": wl_fit.residual_fraction,
        "W_L rank-2K residual, fraction of the squared norm": wl_fit.residual_energy_fraction,
        f"logit fit Σ α_k cos(w_k({'a+b' if sign == 1 else 'a-b'}-c)): FVE": logit_fit.fve,
        "logit fit: loss of the approximation": logit_fit.loss,
        "neurons explained > threshold (fraction)": 1 - sizes[circuits.OTHER_CLUSTER] / len(clusters),
        "Table 1 FVE (min)": table_1.fve.min(),
        "Table 1 FVE (max)": table_1.fve.max(),
    }
    if acts.attention is not None:
        ours.update({
            "attention = -> a: FVE of one-frequency wave (min over heads)": attention.fve.min(),
            "attention = -> a: FVE of one-frequency wave (max over heads)": attention.fve.max(),
            "attention = -> = (max head mean)": attention.mean_to_self.max(),
        })
    headline = pd.DataFrame([{"quantity": q, "ours": v} for q, v in ours.items()])
    return {
        "headline": headline,
        "key_frequencies": rules,
        "section_4_4": section,
        "frequencies": frequencies,
        "table_1": table_1,
        "cluster_sizes": sizes.reset_index(),
        "clusters": clusters,
        "logit_fit_alpha": logit_fit.table(),
        "attention": attention,
    }


def markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs the optional tabulate package)."""

    def cell(x) -> str:
        if isinstance(x, float):
            return "" if x != x else f"{x:.4g}"
        return str(x)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)
