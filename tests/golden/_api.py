"""The golden run through mechgrok's public modules: the one place to update when an API moves."""

from __future__ import annotations

from pathlib import Path

GOLDEN_CONFIG = dict(p=31, frac_train=0.7, d_model=64, n_heads=4, d_mlp=256, lr=3e-3, epochs=800,
                     eval_every=10, checkpoint_every=100, seed=0)


def compute_golden(out_dir: Path) -> dict:
    from mechgrok.analysis import ablations, circuits, progress
    from mechgrok import runs
    from mechgrok.config import Config
    from mechgrok.reproduce import nanda2023
    from mechgrok.training.loop import train

    cfg = Config(**GOLDEN_CONFIG)
    result = train(cfg, out_dir, tune_process=False)
    measures, key = progress.compute_measures(out_dir, fast_matmul=False, tune_malloc=False)
    run = runs.load_run(out_dir)
    acts = circuits.gather_activations(run.model)
    clusters = circuits.neuron_clusters(acts.neurons)
    fit = circuits.neuron_logit_fit(acts.W_L, key)
    section = ablations.section_4_4_table(run.model, key, circuits.clustered_neurons(clusters), fit.directions)
    section = nanda2023.with_published({"section_4_4": section})["section_4_4"]
    weights = {k: v.detach().clone() for k, v in runs.state_tensors(run.model).items()}
    return {"metrics": result.metrics, "measures": measures, "section_4_4": section, "weights": weights,
            "key_frequencies": key, "config": GOLDEN_CONFIG}
