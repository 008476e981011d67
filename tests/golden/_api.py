"""The golden run through mechgrok's public modules: the one place to update when an API moves."""

from __future__ import annotations

from pathlib import Path

GOLDEN_CONFIG = dict(p=31, frac_train=0.7, d_model=64, n_heads=4, d_mlp=256, lr=3e-3, epochs=800,
                     eval_every=10, checkpoint_every=100, seed=0)


def section_4_4(model, key: list[int]):
    """The §4.4 table of a trained model at the given key frequencies, with the paper's column."""
    from mechgrok.analysis import ablations, circuits
    from mechgrok.reproduce import nanda2023

    acts = circuits.gather_activations(model)
    clusters = circuits.neuron_clusters(acts.neurons)
    fit = circuits.neuron_logit_fit(acts.W_L, key)
    section = ablations.section_4_4_table(model, key, circuits.clustered_neurons(clusters), fit.directions)
    return nanda2023.with_published({"section_4_4": section})["section_4_4"]


def model_from_weights(weights: dict):
    """The golden config's model holding ``weights``, attached to its (seeded) split."""
    from mechgrok import runs
    from mechgrok.config import Config
    from mechgrok.tasks.base import make_split
    from mechgrok.tasks.modular import ModularTask

    cfg = Config(**GOLDEN_CONFIG)
    split = make_split(ModularTask(cfg.p, cfg.op).n_pairs, cfg.frac_train, cfg.seed)
    return runs.model_from_state(cfg, weights, split)


def compute_golden(out_dir: Path) -> dict:
    from mechgrok import runs
    from mechgrok.analysis import progress
    from mechgrok.config import Config
    from mechgrok.training.loop import train

    cfg = Config(**GOLDEN_CONFIG)
    result = train(cfg, out_dir, tune_process=False)
    measures, key = progress.compute_measures(out_dir, fast_matmul=False, tune_malloc=False)
    run = runs.load_run(out_dir)
    weights = {k: v.detach().clone() for k, v in runs.state_tensors(run.model).items()}
    return {"metrics": result.metrics, "measures": measures, "section_4_4": section_4_4(run.model, key),
            "weights": weights, "key_frequencies": key, "config": GOLDEN_CONFIG}
