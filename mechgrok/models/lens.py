"""The one place that imports TransformerLens (3.x, capped below 4.0).

Everything else reaches TransformerLens through this module, and only when a model is built
or loaded, so ``import mechgrok`` and the command line start without it. 4.0 removes
``HookedTransformer`` but keeps ``HookedRootModule`` and ``HookPoint``, which the hooked model
families subclass.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # 3.x warns at import and at construction that HookedTransformer goes away in 4.0;
    # mechgrok pins <4 on purpose.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.hook_points import HookedRootModule, HookPoint
    from transformer_lens.head_detector import (
        compute_head_attention_similarity_score,
        get_induction_head_detection_pattern,
        get_previous_token_head_detection_pattern,
    )

__all__ = ["HookedRootModule", "HookPoint", "HookedTransformer", "HookedTransformerConfig", "new_hooked_transformer",
           "compute_head_attention_similarity_score", "get_induction_head_detection_pattern",
           "get_previous_token_head_detection_pattern"]


def new_hooked_transformer(cfg: HookedTransformerConfig) -> HookedTransformer:
    """``HookedTransformer(cfg)`` on the CPU, with 3.x's deprecation warning silenced at this one call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*", category=DeprecationWarning)
        return HookedTransformer(cfg, move_to_device=False)
