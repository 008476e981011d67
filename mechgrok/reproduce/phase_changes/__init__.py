"""The Alignment Forum post's reproduction (Nanda, *A Mechanistic Interpretability Analysis of
Grokking*, 2022): phase changes in toy sequence tasks, slingshots, weight decay, more data and the
2-layer MLP. One module per part, each with the same three functions:

* ``plan(full=False) -> dict[str, Sweep]``: each experiment's runs (default sizes fit the report's
  budget on a 2-core machine; ``full`` the post's own sizes);
* ``summarise(out) -> dict``: the numbers the figures and claims read, from ``OUT/<experiment>/``;
* ``claims(summary) -> dict[str, bool]``: each claim of the post, decided by a documented rule.

``pipeline`` trains every part's sweeps, summarises them and writes the report.
"""
