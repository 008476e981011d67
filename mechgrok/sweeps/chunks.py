"""A sweep's unit of work: a chunk of runs that train together, and the function that trains it.

Every executor (:mod:`mechgrok.sweeps.execute`) sends the same :func:`train_chunk` to a
worker, so a chunk trains the same way in this process, in a process pool or on a Ray node.

* **Grouping.** Runs are grouped by :func:`chunk_key`: the stacked trainer's
  :func:`mechgrok.training.stack.stack_key` plus the fields that set how many train and test
  rows a run has (``n_train``, ``n_test``, ``frac_train``, ``pairs``). The stacked trainer
  pads a stack's rows to its largest train set, and the padded length orders the float32
  sums, so a run stacked with larger ones would get other bits. Grouping by size too keeps
  every run's numbers a function of its own config: the same whichever executor, however
  many workers, and after a kill whatever was left to do.
* **Chunks.** Each group is cut, in sweep order, into chunks of at most ``models_per_task``
  runs (default: the group spread over the workers, at most :data:`MAX_MODELS_PER_TASK`).
* **Training.** Families without an exact fast step (the MLPs) train as one stack
  (:func:`mechgrok.training.stack.train_stack`); a family with one (the transformer) trains
  run by run with :func:`mechgrok.train`. Either trainer skips a finished folder and resumes a
  partial one from its resume file, so a chunk restarted after a kill picks up where it was.
* **Bit for bit.** A stacked model's numbers do not depend on which models share its batched
  step, given the same padding (``tests/test_stack.py``). Two things still change the last
  bits: a probed ``chunk_size`` (the default, timed on each worker, so workers may pick
  differently, and a chunk of 1 is a plain matmul) and a run left alone in its task (the last
  unfinished run of its group after a kill). Pass ``chunk_size`` >= 2 to
  :func:`mechgrok.sweeps.run_sweep` when results must match bit for bit across executors;
  otherwise they agree to float32 rounding (compare grokking statistically anyway,
  docs/training.md).
"""

from __future__ import annotations

import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mechgrok.config import Config
from mechgrok.sweeps.grid import SweepRun
from mechgrok.sweeps.manifest import MANIFEST_FILE

__all__ = ["MAX_MODELS_PER_TASK", "ChunkReport", "chunk_key", "die_with_parent", "plan_chunks", "train_chunk"]

# At most this many runs per task by default: Pearce et al.'s sweep has 45 runs of one width and
# train size (5 weight decays x 9 seeds), and batching 45 models was measured to help up to
# hidden 64 (REFERENCE.md §7); smaller tasks also lose less to a kill and show progress sooner.
MAX_MODELS_PER_TASK = 45
# Fields that set a run's row counts (mechgrok.tasks.data.run_data), and so the stack's padding.
SIZE_FIELDS = ("n_train", "n_test", "frac_train", "pairs")


@dataclass(frozen=True)
class ChunkReport:
    """What a worker says back about a chunk: per run, its folder, the epoch it reached, and
    whether it stopped early (interrupted)."""

    folders: tuple[str, ...]
    epochs: tuple[int, ...]
    interrupted: bool
    pid: int
    host: str


def chunk_key(cfg: Config) -> tuple:
    """Runs with equal keys may train in one chunk (the module docstring says why sizes count)."""
    from mechgrok.training.stack import stack_key

    return stack_key(cfg) + tuple((name, getattr(cfg, name)) for name in SIZE_FIELDS)


def plan_chunks(runs: Sequence[SweepRun], workers: int, models_per_task: int | None = None) -> list[tuple[SweepRun, ...]]:
    """The runs cut into chunks: grouped by :func:`chunk_key` (groups in order of their first
    run), each group cut in sweep order into pieces of at most ``models_per_task`` runs
    (default: ``ceil(len(group) / workers)``, at most :data:`MAX_MODELS_PER_TASK`). A lone
    run left at the end of a group joins the chunk before it: the stacked trainer rounds a model
    trained alone (a plain matmul) unlike one in a batched step, and every other run of the group
    trains batched."""
    groups: dict[tuple, list[SweepRun]] = {}
    for run in runs:
        groups.setdefault(chunk_key(run.config), []).append(run)
    chunks = []
    for members in groups.values():
        size = models_per_task or min(MAX_MODELS_PER_TASK, math.ceil(len(members) / max(1, workers)))
        pieces = [members[i:i + size] for i in range(0, len(members), size)]
        if len(pieces) > 1 and len(pieces[-1]) == 1:  # a lone run would round unlike its batched peers
            last = pieces.pop()
            pieces[-1] += last
        chunks += [tuple(piece) for piece in pieces]
    return chunks


# Set by SIGINT in a process-pool worker between runs (mechgrok.sweeps.execute installs the handler):
# the chunk stops before its next run. Inside a run the trainer's own handler stops it gracefully.
_stop_requested = False


def request_stop(signum, frame) -> None:
    global _stop_requested
    _stop_requested = True


def train_chunk(cfgs: Sequence[Config], folders: Sequence[str], *, sweep_folder: str, device: str = "cpu",
                threads: int | None = None, chunk_size: int | None = None) -> ChunkReport:
    """Train ``cfgs[i]`` into ``folders[i]`` (one chunk), skipping finished runs and resuming partial ones.

    ``sweep_folder`` must hold the sweep's manifest here too: a worker on another machine that
    does not see it is refused, since the sweep folder must be on a filesystem every worker
    sees. ``chunk_size`` is the stacked trainer's models per batched step (default: probed).
    """
    from mechgrok import registry
    from mechgrok.sweeps.status import clear_debris

    if not (Path(sweep_folder) / MANIFEST_FILE).exists():
        raise FileNotFoundError(
            f"{sweep_folder}/{MANIFEST_FILE} is not there on host {os.uname().nodename}: every worker must see the "
            "sweep folder at the same path. Put it on a shared filesystem (NFS, a cluster mount) and pass that path"
        )
    for folder in folders:
        clear_debris(folder)
    stop_before_next = _stop_requested
    if registry.family(cfgs[0].family).training == "stack":
        from mechgrok.training.stack import train_stack

        results = [] if stop_before_next else train_stack(cfgs, folders, device=device, threads=threads,
                                                          chunk_size=chunk_size)
    else:
        from mechgrok.training.loop import train

        results = []
        for cfg, folder in zip(cfgs, folders):
            if _stop_requested or (results and results[-1].interrupted):
                break
            results.append(train(cfg, folder, threads=threads, device=device))
    return ChunkReport(
        folders=tuple(str(r.run_dir) for r in results),
        epochs=tuple(int(r.epoch) for r in results),
        interrupted=len(results) < len(cfgs) or any(r.interrupted for r in results),
        pid=os.getpid(),
        host=os.uname().nodename,
    )


def init_worker(parent_pid: int, pid_queue) -> None:
    """Set up a process-pool worker: its own process group (a terminal's Ctrl-C reaches the
    driver only, which forwards one SIGINT, so each trainer stops once, gracefully), death with
    the driver (Linux: a SIGKILLed driver leaves no worker training on), a stop flag for
    SIGINT between runs, and its pid sent to the driver."""
    os.setpgrp()
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, request_stop)
    pid_queue.put(os.getpid())


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; elsewhere nothing), so a
    killed driver leaves no worker training on; exit at once if the parent is gone already."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: a killed driver's workers finish their chunk, then exit
        return
    if os.getppid() != parent_pid:  # the driver died before prctl took effect
        os._exit(1)
