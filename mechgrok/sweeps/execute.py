"""Run a sweep: its unfinished runs, cut into chunks, trained by one of three executors.

::

    from mechgrok.sweeps import Sweep, run_sweep
    results = run_sweep(sweep, "runs/parity", executor="process")    # every CPU of this machine
    results = run_sweep(sweep, "/shared/parity", executor="ray", address="auto")   # a Ray cluster

* ``"inline"``: chunk after chunk in this process (tests, debugging, a profiler).
* ``"process"``: a local pool of ``workers`` processes (default: the CPUs this process may
  use, ``os.sched_getaffinity``), started with ``spawn`` (torch and ``fork`` do not mix), each
  training at ``threads`` torch threads (default 1: on a shared machine two OpenMP threads that
  wait on each other were measured ten times slower than one, docs/training.md).
* ``"ray"``: each chunk a Ray task (``num_cpus=1``; ``num_gpus=1`` on ``device="cuda"``),
  on the cluster at ``address`` (as ``ray.init(address=...)`` takes it: ``"host:6379"``, ``"auto"``
  for the cluster started last on this machine, ``"ray://host:10001"`` with ``ray[client]``;
  default: ``RAY_ADDRESS``, else a new local cluster of ``workers`` CPUs, never someone else's
  cluster found on the machine), or on the connection this process already has. Ray is imported only here (``pip install 'mechgrok[ray]'``). The
  sweep folder must be on a filesystem every node sees at the same path (NFS, a cluster
  mount), and every node needs the same mechgrok installed (or a ``runtime_env`` in
  ``ray_init``). A task whose worker dies is retried (``max_retries=3``); it resumes from the
  run folders.

Whatever the executor: finished runs are skipped before dispatch (and again by the trainer),
partial runs resume from their resume files, and the result is :func:`sweep_results`, read
from the folders, so it is the same table whichever executor trained them. A sweep killed at
any moment (SIGKILL included) and run again finishes without retraining a finished run: every
file is written atomically, the process pool's workers die with their driver (Linux), and
what a kill leaves half-begun is tidied (:func:`mechgrok.sweeps.status.clear_debris`). One
driver at a time trains a sweep folder (a ``flock`` on ``SWEEP/.lock``, released by the
kernel however the driver ends).

``run_sweep`` returns only when every run is finished. Ctrl-C stops every running trainer
after its current step (each writes its resume file) and re-raises ``KeyboardInterrupt``; a
chunk that fails raises :class:`SweepError` once the others are done, naming the runs and the
error. Nothing is printed: ``progress=True`` shows a tqdm bar of runs, and ``on_chunk`` is
called with each finished chunk's run names.
"""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from mechgrok import speed
from mechgrok.sweeps.chunks import ChunkReport, init_worker, plan_chunks, train_chunk
from mechgrok.sweeps.grid import Sweep, SweepRun
from mechgrok.sweeps.manifest import LOCK_FILE, open_sweep
from mechgrok.sweeps.results import sweep_results
from mechgrok.sweeps.status import sweep_status

__all__ = ["EXECUTORS", "SweepError", "run_sweep", "usable_cpus"]

EXECUTORS = ("inline", "process", "ray")


class SweepError(RuntimeError):
    """Some chunks of a sweep failed; ``failures`` maps each failed chunk's first run to its error.
    The other chunks finished; running the sweep again retries only what is left."""

    def __init__(self, message: str, failures: dict[str, BaseException]):
        super().__init__(message)
        self.failures = failures


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    *,
    executor: str = "process",
    workers: int | None = None,
    device: str = "cpu",
    threads: int | None = None,
    models_per_task: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    on_chunk: Callable[[list[str]], None] | None = None,
    address: str | None = None,
    ray_init: dict[str, Any] | None = None,
    ray_options: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Train every unfinished run of ``sweep`` into the sweep folder ``out``; return its results.

    ``out`` gets the manifest (:func:`mechgrok.sweeps.manifest.open_sweep`: a folder may only
    grow). ``workers``: parallel tasks (process: pool size, default :func:`usable_cpus`; ray:
    at most this many tasks in flight, default all; inline: ignored except for chunking).
    ``threads``: torch threads per task (default :func:`mechgrok.speed.resolve_threads`: 1).
    ``models_per_task`` and ``chunk_size``: runs per task and models per batched step
    (:func:`mechgrok.sweeps.chunks.plan_chunks`, :func:`mechgrok.training.stack.train_stack`).
    ``address``, ``ray_init`` (more ``ray.init`` keywords) and ``ray_options`` (more task
    options) apply to ``executor="ray"`` only. See the module docstring for the rest.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r} is not one of {list(EXECUTORS)}; pass e.g. executor='process'")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers={workers!r} must be an integer >= 1, or None for {usable_cpus()} (this machine's CPUs)")
    if models_per_task is not None and (isinstance(models_per_task, bool) or not isinstance(models_per_task, int)
                                        or models_per_task < 1):
        raise ValueError(f"models_per_task={models_per_task!r} must be an integer >= 1, or None to spread each group "
                         "over the workers")
    if executor != "ray" and (address is not None or ray_init or ray_options):
        raise ValueError(f"address, ray_init and ray_options apply to executor='ray' only, not executor={executor!r}")
    if not isinstance(sweep, Sweep):
        raise ValueError(f"sweep={sweep!r} must be a mechgrok.sweeps.Sweep; build one with Sweep(Config(...), {{field: values}})")
    threads = speed.resolve_threads(threads)  # resolved here, so every worker of every executor trains alike
    out = Path(out).absolute()  # workers elsewhere see the same path
    open_sweep(out, sweep)
    with _driver_lock(out):
        todo = _unfinished(sweep, out)
        job = _Job(sweep, out, todo, device, threads, chunk_size, models_per_task, progress, on_chunk)
        try:
            if todo and executor == "inline":
                job.run_inline(workers or 1)
            elif todo and executor == "process":
                job.run_process(workers or usable_cpus())
            elif todo:
                job.run_ray(workers, address, ray_init or {}, ray_options or {})
        finally:
            if job.bar is not None:
                job.bar.close()
        job.raise_failures()
        return sweep_results(out, sweep)


def _unfinished(sweep: Sweep, out: Path) -> list[SweepRun]:
    status = sweep_status(out, sweep)
    conflicts = status[status.status == "conflict"]
    if len(conflicts):
        shown = "; ".join(f"{r.run}: {r.detail}" for r in conflicts.head(5).itertuples())
        more = f" (and {len(conflicts) - 5} more)" if len(conflicts) > 5 else ""
        raise ValueError(f"{len(conflicts)} run folder(s) of {out} cannot be trained: {shown}{more}; nothing was trained")
    return [run for run, state in zip(sweep.runs, status.status) if state != "finished"]


@contextmanager
def _driver_lock(out: Path) -> Iterator[None]:
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise ValueError(
                f"another run_sweep ({holder}) is training {out}; wait for it to end, or stop it (it resumes later)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


class _Job:
    """One run_sweep call's chunks, their progress, and their failures."""

    def __init__(self, sweep: Sweep, out: Path, todo: list[SweepRun], device: str, threads: int,
                 chunk_size: int | None, models_per_task: int | None, progress: bool,
                 on_chunk: Callable[[list[str]], None] | None):
        self.sweep, self.out, self.todo = sweep, out, todo
        self.device, self.threads, self.chunk_size, self.models_per_task = device, threads, chunk_size, models_per_task
        self.on_chunk = on_chunk
        self.failures: dict[str, BaseException] = {}
        self.interrupted: list[str] = []
        self.bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(todo), unit="run", desc=f"sweep {out.name}", dynamic_ncols=True)

    def chunks(self, workers: int) -> list[tuple[SweepRun, ...]]:
        return plan_chunks(self.todo, workers, self.models_per_task)

    def args(self, chunk: tuple[SweepRun, ...]) -> tuple[tuple, dict]:
        return ([r.config for r in chunk], [str(self.out / r.name) for r in chunk]), dict(
            sweep_folder=str(self.out), device=self.device, threads=self.threads, chunk_size=self.chunk_size)

    def done(self, chunk: tuple[SweepRun, ...], report: ChunkReport | None = None, error: BaseException | None = None) -> None:
        if error is not None:
            self.failures[chunk[0].name] = error
        elif report is not None and report.interrupted:
            self.interrupted.append(chunk[0].name)
        elif report is not None:
            if self.bar is not None:
                self.bar.update(len(report.folders))
            if self.on_chunk is not None:
                self.on_chunk([r.name for r in chunk])

    def raise_failures(self) -> None:
        if self.failures:
            lines = [f"{name}: {type(err).__name__}: {err}" for name, err in self.failures.items()]
            raise SweepError(
                f"{len(self.failures)} chunk(s) of {self.out} failed (each named by its first run): " + "; ".join(lines)
                + ". The other chunks finished; fix the cause and run the sweep again to train what is left",
                self.failures,
            ) from next(iter(self.failures.values()))
        if self.interrupted:
            raise KeyboardInterrupt(f"chunk(s) starting at {', '.join(self.interrupted)} were interrupted; run again to resume")

    # ----------------------------------------------------------------- inline
    def run_inline(self, workers: int) -> None:
        for chunk in self.chunks(workers):
            args, kwargs = self.args(chunk)
            try:
                report = train_chunk(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 -- reported with the others in SweepError
                self.done(chunk, error=err)
                continue
            self.done(chunk, report)
            if report.interrupted:  # the trainer caught Ctrl-C and saved: stop here
                raise KeyboardInterrupt(f"interrupted in chunk {chunk[0].name}; run again to resume")

    # ----------------------------------------------------------------- process pool
    def run_process(self, workers: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        chunks = self.chunks(workers)
        ctx = multiprocessing.get_context("spawn")
        pids = ctx.SimpleQueue()
        pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx, initializer=init_worker,
                                   initargs=(os.getpid(), pids))
        futures = {}
        try:
            for chunk in chunks:
                args, kwargs = self.args(chunk)
                futures[pool.submit(train_chunk, *args, **kwargs)] = chunk
            for future in as_completed(futures):
                try:
                    self.done(futures[future], future.result())
                except BrokenProcessPool:
                    self.done(futures[future], error=RuntimeError(
                        "a worker process died (killed, or out of memory); its runs resume when the sweep runs again"))
                except Exception as err:  # noqa: BLE001
                    self.done(futures[future], error=err)
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            while not pids.empty():  # each running trainer finishes its step and writes its resume file
                try:
                    os.kill(pids.get(), signal.SIGINT)
                except ProcessLookupError:
                    pass
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # ----------------------------------------------------------------- ray
    def run_ray(self, workers: int | None, address: str | None, init: dict[str, Any], options: dict[str, Any]) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError("executor='ray' needs Ray: pip install 'mechgrok[ray]' (or pip install 'ray>=2.9')") from None
        started = not ray.is_initialized()
        if not started and (address is not None or init):
            raise ValueError("Ray is already initialised in this process; pass address=None and no ray_init to use that "
                             "connection, or call ray.shutdown() first")
        if started:
            # None: RAY_ADDRESS, else a new local cluster -- never Ray's own fallback to whatever cluster was
            # started last on this machine (on a shared machine, someone else's)
            address = address or os.environ.get("RAY_ADDRESS") or "local"
            defaults = {"include_dashboard": False, **({"num_cpus": workers} if address == "local" and workers else {})}
            ray.init(address=address, **{**defaults, **init})
        try:
            n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            chunks = self.chunks(n)
            task_options = {"num_cpus": 1, "max_retries": 3, **({"num_gpus": 1} if self.device.startswith("cuda") else {}),
                            **options}
            remote = ray.remote(**task_options)(train_chunk)
            queue, running = list(chunks), {}
            try:
                while queue or running:
                    while queue and (workers is None or len(running) < workers):
                        chunk = queue.pop(0)
                        args, kwargs = self.args(chunk)
                        running[remote.remote(*args, **kwargs)] = chunk
                    ready, _ = ray.wait(list(running), num_returns=1)
                    for ref in ready:
                        chunk = running.pop(ref)
                        try:
                            self.done(chunk, ray.get(ref))
                        except ray.exceptions.RayTaskError as err:
                            cause = err.cause if isinstance(getattr(err, "cause", None), BaseException) else err
                            self.done(chunk, error=cause)
                        except ray.exceptions.RayError as err:
                            self.done(chunk, error=err)
            except KeyboardInterrupt:
                for ref in running:  # KeyboardInterrupt in each task: its trainer saves and stops
                    ray.cancel(ref)
                ray.wait(list(running), num_returns=len(running), timeout=120)
                raise
        finally:
            if started:
                ray.shutdown()  # stops a local cluster we started; disconnects from a remote one
