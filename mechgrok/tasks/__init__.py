"""Tasks: what a model is trained on (:mod:`.base` says what a task is; one module per task).

* :mod:`.base`: ``Task``, ``FiniteTask``, ``SampledTask``, ``Split``, ``make_split``.
* :mod:`.modular`: modular arithmetic, c = op(a, b) mod p (Nanda et al., Pearce et al.).
* :mod:`.parity`: sparse parity, the parity of the first k of n bits (Pearce et al.).
* :mod:`.data`: a config's task and data (``run_data``): examples, labels and split.
"""
