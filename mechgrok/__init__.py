"""mechgrok: mechanistic interpretability of grokking on modular arithmetic.

The supported public API is re-exported here; submodules hold the rest:
``task``, ``config``, ``model`` (the only TransformerLens import), ``fastpath`` and ``train``,
``runs`` (run folders, checkpoints), ``fourier``, ``circuits``, ``ablations``, ``hooks``.
"""

from mechgrok.ablations import (
    AblationResult,
    ablate_frequencies,
    embedding_hook,
    evaluate,
    excluded_loss,
    frequency_ablation_losses,
    frequency_hooks,
    logit_hook,
    neuron_hook,
    restricted_loss,
)
from mechgrok.circuits import gather_activations, key_frequencies, neuron_clusters
from mechgrok.config import Config
from mechgrok.model import RunInfo, build_model, run_info
from mechgrok.runs import Run, load_checkpoint, load_run
from mechgrok.task import OPERATIONS, Split, Task, make_split
from mechgrok.train import TrainResult, train

__all__ = [
    "AblationResult",
    "Config",
    "OPERATIONS",
    "Run",
    "RunInfo",
    "Split",
    "Task",
    "TrainResult",
    "ablate_frequencies",
    "build_model",
    "embedding_hook",
    "evaluate",
    "excluded_loss",
    "frequency_ablation_losses",
    "frequency_hooks",
    "gather_activations",
    "key_frequencies",
    "load_checkpoint",
    "load_run",
    "logit_hook",
    "make_split",
    "neuron_clusters",
    "neuron_hook",
    "restricted_loss",
    "run_info",
    "train",
]
