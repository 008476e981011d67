"""mechgrok: mechanistic interpretability of grokking.

The supported API is re-exported here and imported lazily: ``import mechgrok`` loads neither
torch nor TransformerLens, and each name pulls in its module on first use. The layers
(docs/architecture.md):

* ``config``, ``presets``, ``registry``, ``hooks``, ``scoring``: configuration, the anchor runs' presets, names, losses.
* ``tasks``: what a model is trained on.  ``models``: model families (the one TransformerLens
  import lives in ``models.lens``).
* ``training``: the resumable trainer.  ``runs``, ``formats``: run folders and foreign files.
* ``analysis``: Fourier readouts, circuits, ablations, progress measures, phases, tables.
* ``report``: figures and the HTML report.  ``reproduce``: one module per source work.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Config": "mechgrok.config",
    "PRESETS": "mechgrok.presets",
    "preset_config": "mechgrok.presets",
    "Site": "mechgrok.hooks",
    "HookFn": "mechgrok.hooks",
    "Task": "mechgrok.tasks.base",
    "FiniteTask": "mechgrok.tasks.base",
    "SampledTask": "mechgrok.tasks.base",
    "Split": "mechgrok.tasks.base",
    "make_split": "mechgrok.tasks.base",
    "ModularTask": "mechgrok.tasks.modular",
    "OPERATIONS": "mechgrok.tasks.modular",
    "ModelFamily": "mechgrok.models.family",
    "build_model": "mechgrok.models.transformer",
    "Run": "mechgrok.runs",
    "RunInfo": "mechgrok.runs",
    "attach": "mechgrok.runs",
    "attached": "mechgrok.runs",
    "run_info": "mechgrok.runs",
    "load_checkpoint": "mechgrok.runs",
    "load_run": "mechgrok.runs",
    "import_run": "mechgrok.formats",
    "TrainResult": "mechgrok.training.loop",
    "train": "mechgrok.training.loop",
    "AblationResult": "mechgrok.scoring",
    "evaluate": "mechgrok.analysis.ablations",
    "ablate_frequencies": "mechgrok.analysis.ablations",
    "embedding_hook": "mechgrok.analysis.ablations",
    "neuron_hook": "mechgrok.analysis.ablations",
    "logit_hook": "mechgrok.analysis.ablations",
    "frequency_hooks": "mechgrok.analysis.ablations",
    "restricted_loss": "mechgrok.analysis.ablations",
    "excluded_loss": "mechgrok.analysis.ablations",
    "frequency_ablation_losses": "mechgrok.analysis.ablations",
    "gather_activations": "mechgrok.analysis.circuits",
    "key_frequencies": "mechgrok.analysis.circuits",
    "neuron_clusters": "mechgrok.analysis.circuits",
    "load_progress": "mechgrok.analysis.progress",
    "reproduce": "mechgrok.reproduce.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mechgrok' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from mechgrok.analysis.ablations import (
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
    from mechgrok.analysis.circuits import gather_activations, key_frequencies, neuron_clusters
    from mechgrok.analysis.progress import load_progress
    from mechgrok.config import Config
    from mechgrok.formats import import_run
    from mechgrok.hooks import HookFn, Site
    from mechgrok.models.family import ModelFamily
    from mechgrok.models.transformer import build_model
    from mechgrok.presets import PRESETS, preset_config
    from mechgrok.reproduce.pipeline import reproduce
    from mechgrok.runs import Run, RunInfo, attach, attached, load_checkpoint, load_run, run_info
    from mechgrok.scoring import AblationResult
    from mechgrok.tasks.base import FiniteTask, SampledTask, Split, Task, make_split
    from mechgrok.tasks.modular import OPERATIONS, ModularTask
    from mechgrok.training.loop import TrainResult, train
