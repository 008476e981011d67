"""Reports: one figure builder per figure (:mod:`.figures`), their plotly drawing
(:mod:`.plotting`) and the self-contained HTML report (:mod:`.html`); the figures of Pearce et
al.'s explorable and their report (:mod:`.pair2023`); the Alignment Forum post's (:mod:`.phase_changes`).
Analysis modules never import this package."""

# The figures of mechgrok.report.figures.FIGURES, by name and in report order (here so that the
# command line can list them without importing torch).
FIGURE_NAMES = (
    "fig2_loss_curves",
    "fig3_fourier_norms",
    "fig4_activations",
    "fig5_neuron_clusters",
    "fig6_frequency_ablation",
    "fig7_progress_measures",
    "appendix_excluded_per_frequency",
    "appendix_cos_coefficients",
)

# The figures of Pearce et al.'s explorable (mechgrok.report.pair2023.PAIR_FIGURES), by name and in
# report order; each name is its builder's.
PAIR_FIGURE_NAMES = (
    "loss_curves",
    "neuron_waves",
    "parity_weights",
    "regime_diagram",
    "circle",
    "constructions",
    "stars",
    "logit_waves",
    "variants",
    "no_weight_decay",
)

# The figures of the Alignment Forum post's reproduction (mechgrok.report.phase_changes), by name
# and in report order: the sequence tasks, the mainline model's, the 2-layer MLP's.
PHASE_FIGURE_NAMES = (
    "addition_digits",
    "induction_heads",
    "max_list_trigrams",
    "crossover",
    "slingshots",
    "weight_decay",
    "more_data",
    "excluded_loss",
    "mlp2_clusters",
)
