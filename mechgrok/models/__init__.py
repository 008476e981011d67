"""Model families: how each kind of model is built, hooked and trained fast.

* :mod:`.lens`: the one TransformerLens import.
* :mod:`.family`: ``ModelFamily``, what a family declares (build, hooks, sites, weights, fast step).
* :mod:`.transformer`: the 1-layer ``HookedTransformer`` of Nanda et al. (family ``transformer``).
* :mod:`.fastpath`: that family's exact fast training step.
"""
