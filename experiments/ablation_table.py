"""python -m experiments.ablation_table --run RUN [--epoch E] [--rule W_L] [--out DIR]

Reverse-engineering tables of a trained run (Nanda et al. §4), written as CSV and Markdown to
RUN/analysis/ (or --out):

* section_4_4.csv      the §4.4 ablations, the paper's losses beside ours
* frequencies.csv      Fig. 6: loss with each frequency removed from the logits, plus the
                       loss with everything but the key frequencies removed (restricted loss)
* table_1.csv          Table 1: fits of u_k·MLP and v_k·MLP by cos/sin(w_k(a+b))
* clusters.csv         neuron clusters (one row per neuron) and cluster_sizes.csv
* key_frequencies.csv  the key frequencies by every rule (the one used is marked)
* headline.csv         single numbers (W_L residual, logit fit, attention, ...) beside the paper's
* ablation_table.md    all of the above in one Markdown page
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from mechgrok import ablations, circuits
from mechgrok.runs import load_run

# Paper numbers for the headline table (docs/concepts.md-§4); NaN where the paper gives none. The
# paper's W_L residual ("0.55% of its norm") is ambiguous, so it stands beside both of ours.
PAPER = {
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


def markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs the optional tabulate package)."""

    def cell(x) -> str:
        if isinstance(x, float):
            return "" if x != x else f"{x:.4g}"
        return str(x)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder (mechgrok train --out RUN)")
    parser.add_argument("--epoch", type=int, default=None, help="checkpoint epoch (default: the newest)")
    parser.add_argument("--rule", default=circuits.DEFAULT_KEY_FREQUENCY_RULE, choices=sorted(circuits.KEY_FREQUENCY_RULES),
                        help=f"key-frequency rule (default: {circuits.DEFAULT_KEY_FREQUENCY_RULE})")
    parser.add_argument("--threshold", type=float, default=0.85, help="neuron-cluster threshold (default: 0.85)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN/analysis)")
    args = parser.parse_args(argv)

    try:
        run = load_run(args.run, epoch=args.epoch)
    except ValueError as err:
        print(f"ablation_table: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.run) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    model = run.model

    acts = circuits.gather_activations(model)
    key = circuits.key_frequencies(acts, args.rule, threshold=args.threshold)
    clusters = circuits.neuron_clusters(acts.neurons, args.threshold)
    sizes = circuits.cluster_sizes(clusters)
    wl_fit = circuits.neuron_logit_fit(acts.W_L, key)
    table_1 = circuits.mlp_direction_fits(acts.neurons, wl_fit)
    logit_fit = circuits.logit_cos_fit(acts.logits, acts.labels, key)
    attention = circuits.attention_readout(acts.attention).table

    section = ablations.section_4_4_table(model, key, circuits.clustered_neurons(clusters), wl_fit.directions)
    frequencies = ablations.frequency_ablation_losses(acts.logits, acts.labels, acts.split, key)
    restricted = ablations.restricted_loss(acts.logits, acts.labels, key)
    keep_key = ablations.score(ablations.restricted_logits(acts.logits, key), acts.labels, acts.split)
    frequencies = pd.concat(
        [
            frequencies.astype({"frequency": object}),
            pd.DataFrame([{"frequency": "all but key", "key": False, "loss_all": keep_key.loss_all,
                           "loss_train": keep_key.loss_train, "loss_test": keep_key.loss_test}]),
        ],
        ignore_index=True,
    )
    rules = pd.DataFrame(
        [{"rule": r, "used": r == args.rule, "frequencies": " ".join(map(str, circuits.key_frequencies(acts, r, threshold=args.threshold))),
          "description": circuits.KEY_FREQUENCY_RULES[r]} for r in circuits.KEY_FREQUENCY_RULES]
    )
    original = ablations.score(acts.logits, acts.labels, acts.split)
    ours = {
        "loss (all inputs)": original.loss_all,
        "restricted loss": restricted,
        "excluded loss (train)": ablations.excluded_loss(acts.logits, acts.labels, key, acts.split.train),
        "W_L rank-2K residual, fraction of the norm": wl_fit.residual_fraction,
        "W_L rank-2K residual, fraction of the squared norm": wl_fit.residual_energy_fraction,
        "logit fit Σ α_k cos(w_k(a+b-c)): FVE": logit_fit.fve,
        "logit fit: loss of the approximation": logit_fit.loss,
        "neurons explained > threshold (fraction)": 1 - sizes[circuits.OTHER_CLUSTER] / len(clusters),
        "Table 1 FVE (min)": table_1.fve.min(),
        "Table 1 FVE (max)": table_1.fve.max(),
        "attention = -> a: FVE of one-frequency wave (min over heads)": attention.fve.min(),
        "attention = -> a: FVE of one-frequency wave (max over heads)": attention.fve.max(),
        "attention = -> = (max head mean)": attention.mean_to_self.max(),
    }
    headline = pd.DataFrame([{"quantity": q, "ours": v, "paper": PAPER[q]} for q, v in ours.items()])
    sizes_df = sizes.reset_index()
    alphas = logit_fit.table()

    tables = {
        "headline": headline,
        "key_frequencies": rules,
        "section_4_4": section,
        "frequencies": frequencies,
        "table_1": table_1,
        "cluster_sizes": sizes_df,
        "clusters": clusters,
        "logit_fit_alpha": alphas,
        "attention": attention,
    }
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False)

    title = f"# Ablation table: {args.run} (epoch {run.epoch}, p={run.config.p})"
    parts = [
        title,
        f"Key frequencies ({args.rule} rule): {', '.join(map(str, key))}. Neuron-cluster threshold {args.threshold}.",
        "## Headline numbers\n\n" + markdown(headline),
        "## Key frequencies by rule\n\n" + markdown(rules),
        "## §4.4 ablations (loss on all p² inputs)\n\n" + markdown(section),
        "## Removing one frequency from the logits (Fig. 6)\n\n" + markdown(frequencies),
        "## Table 1: u_k·MLP and v_k·MLP against cos/sin(w_k(a+b))\n\n" + markdown(table_1),
        "## Neuron cluster sizes (paper: 44/93/145/87/64, 79 other)\n\n" + markdown(sizes_df),
        "## Logit fit coefficients α_k\n\n" + markdown(alphas),
        "## Attention from `=`\n\n" + markdown(attention),
    ]
    (out / "ablation_table.md").write_text("\n\n".join(parts) + "\n")
    print(f"wrote {len(tables)} CSV tables and ablation_table.md to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
