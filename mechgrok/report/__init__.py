"""Reports: one figure builder per figure (:mod:`.figures`), their plotly drawing
(:mod:`.plotting`) and the self-contained HTML report (:mod:`.html`). Analysis modules never
import this package."""

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
