"""Analyses: pure functions of tensors, plus hook factories for interventions.

* :mod:`.fourier`: the Fourier basis mod p, transforms, directions, projections.
* :mod:`.circuits`: readouts of W_E, W_L = W_out W_U, neuron clusters, logit and attention fits.
* :mod:`.ablations`: frequency ablations as hooks, restricted/excluded loss, the §4.4 interventions.
* :mod:`.progress`: the progress measures at every checkpoint of a run.
* :mod:`.phases`: memorization / circuit formation / cleanup from those measures.
* :mod:`.tables`: the reverse-engineering tables of one trained run.

Each analysis says which tasks it is valid for and refuses the others with a clear error.
"""
