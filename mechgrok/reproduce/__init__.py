"""Reproductions, one module per source work.

* :mod:`.nanda2023`: every number Nanda et al. (ICLR 2023) publish that mechgrok compares with.
* :mod:`.pipeline`: the whole Nanda et al. reproduction (``mechgrok reproduce``).
"""
