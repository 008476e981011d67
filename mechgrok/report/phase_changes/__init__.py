"""The figures of the Alignment Forum post's reproduction, one module per part (the parts of
:mod:`mechgrok.reproduce.phase_changes`): run folders and a part's summary in, a
:class:`mechgrok.report.figures.FigureOutput` out, every caption computed from the runs."""
