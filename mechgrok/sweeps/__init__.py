"""Sweeps: a grid of configs trained into one folder, on this machine or on many.

::

    from mechgrok import Config
    from mechgrok.sweeps import Sweep, run_sweep, sweep_status

    base = Config(task="parity", family="parity_mlp", lr=3e-3, beta1=0.99, beta2=0.98, warmup_steps=0,
                  epochs=20_000, eval_every=100, loss_dtype="float32")
    sweep = Sweep(base, {"n_train": [750, 1000, 1250, 1500, 1750], "d_mlp": [16, 32, 64, 128, 258],
                         "weight_decay": [0.01, 0.03, 0.1, 0.3, 1.0], "seed": range(9)})   # REFERENCE §7: 1,125 runs
    results = run_sweep(sweep, "runs/parity_sweep", executor="process")   # or "inline", "ray"
    sweep_status("runs/parity_sweep")                                     # finished / partial / not_started

One concept per module:

* :mod:`.grid`: ``Sweep`` (a base config and axes) and its runs, in a documented order, with
  folder names made of the axis values;
* :mod:`.manifest`: the sweep folder's ``sweep.json``, and the rule that a folder only grows;
* :mod:`.status`: where each run stands, read cheaply from its folder;
* :mod:`.results`: one row per run (final and minimum losses), read from the folders;
* :mod:`.chunks`: which runs train together, and the function a worker runs on a chunk;
* :mod:`.execute`: ``run_sweep`` and its executors (inline, a process pool, Ray).
"""

from mechgrok.sweeps.chunks import MAX_MODELS_PER_TASK, chunk_key, plan_chunks, train_chunk
from mechgrok.sweeps.execute import EXECUTORS, SweepError, run_sweep, usable_cpus
from mechgrok.sweeps.grid import Sweep, SweepRun, format_value
from mechgrok.sweeps.manifest import MANIFEST_FILE, experiment_runs, open_sweep, read_manifest
from mechgrok.sweeps.results import RESULT_COLUMNS, sweep_results
from mechgrok.sweeps.status import STATUSES, RunState, run_state, sweep_status

__all__ = [
    "EXECUTORS", "MANIFEST_FILE", "MAX_MODELS_PER_TASK", "RESULT_COLUMNS", "STATUSES", "RunState", "Sweep", "SweepError",
    "SweepRun", "chunk_key", "experiment_runs", "format_value", "open_sweep", "plan_chunks", "read_manifest", "run_state", "run_sweep",
    "sweep_results", "sweep_status", "train_chunk", "usable_cpus",
]
