"""Process-level settings that make every training step faster (docs/training.md).

Each changes process-wide state, so each is a context manager that puts the old state back:
:func:`mechgrok.training.loop.train` applies them for the length of the call only
(``tune_process=True``, the default, and ``threads``):

* **Threads.** :func:`torch_threads` sets torch's intra-op thread count; the default comes
  from :func:`default_threads` (measured, docs/training.md). Inside an explicit
  ``torch_threads(n)`` block, code asking for the default gets ``n`` (:func:`resolve_threads`),
  so ``with torch_threads(2): sweep(...)`` trains every run of the sweep on 2 threads.
* **oneDNN float32 GEMMs.** ``torch.set_float32_matmul_precision("medium")`` routes CPU
  float32 matmuls to oneDNN, about twice as fast as MKL's AVX2 path on AMD CPUs. The setting
  formally permits bf16 on hardware that has it, so we keep it only if a probe GEMM still
  agrees with float64 to float32 accuracy; otherwise we put the old setting back.
* **glibc malloc thresholds.** By default every step returns tens of MB of activations to the
  kernel and page-faults them back in. Raising the mmap and trim thresholds (``mallopt``)
  keeps that memory in the process. :func:`tuned_malloc` restores glibc's defaults afterwards.
* **Subnormal floats flushed to zero.** Late in training, weight decay drives many weights,
  gradients and Adam moments below float32's smallest normal number (2⁻¹²⁶ ≈ 1.2e-38), where
  many CPUs take a slow microcoded path (4x per step on one Intel Xeon, docs/training.md).
  :func:`flushed_denormals` sets flush-to-zero and denormals-are-zero on the calling thread
  *and* on every thread of torch's OpenMP pool (the flags live in each thread's MXCSR register,
  and ``torch.set_flush_denormal`` sets the calling thread's only), then probes that a
  subnormal product comes out as 0 on all of them.
"""

from __future__ import annotations

import contextvars
import ctypes
import ctypes.util
import os
import sys
from contextlib import contextmanager
from typing import Iterator

import torch

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def probe_matmul_error(n: int = 256) -> float:
    """Relative error of an n×n float32 GEMM against float64, under the current precision."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=generator), torch.randn(n, n, generator=generator)
    exact = a.double() @ b.double()
    return float((a @ b - exact).norm() / exact.norm())


def enable_fast_float32_matmul(tolerance: float = 1e-5) -> bool:
    """Route float32 GEMMs to oneDNN if that keeps float32 accuracy; return whether it did."""
    previous = torch.get_float32_matmul_precision()
    if torch.cuda.is_available():  # on GPUs "medium" means bf16/tf32: never silently
        return False
    torch.set_float32_matmul_precision("medium")
    if probe_matmul_error() > tolerance:
        torch.set_float32_matmul_precision(previous)
        return False
    return True


@contextmanager
def fast_float32_matmul(enabled: bool = True) -> Iterator[bool]:
    """Within the block, float32 GEMMs use oneDNN where that keeps float32 accuracy; the
    previous precision setting comes back afterwards. Yields whether oneDNN is in use."""
    previous = torch.get_float32_matmul_precision()
    try:
        yield enable_fast_float32_matmul() if enabled else False
    finally:
        torch.set_float32_matmul_precision(previous)


# glibc's documented defaults (mallopt(3)): the mmap threshold is dynamic from 128 KiB, the trim
# threshold 128 KiB, the top pad 128 KiB (DEFAULT_TOP_PAD); setting them back fixes the mmap
# threshold at 128 KiB, which only turns off its sliding adjustment.
_GLIBC_DEFAULTS = {_M_MMAP_THRESHOLD: 128 * 1024, _M_TRIM_THRESHOLD: 128 * 1024, _M_TOP_PAD: 128 * 1024}
_TUNED = {_M_MMAP_THRESHOLD: 32 * 2**20, _M_TRIM_THRESHOLD: 2**31 - 1, _M_TOP_PAD: 256 * 2**20}


def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None


def _set_malloc(values: dict[int, int]) -> bool:
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = 1
    for param, value in values.items():
        ok &= mallopt(param, value)
    return bool(ok)


def tune_malloc() -> bool:
    """Keep freed activation memory in the process (glibc only), process-wide until
    :func:`reset_malloc`; return whether it applied. Prefer :func:`tuned_malloc`."""
    return _set_malloc(_TUNED)


def reset_malloc() -> bool:
    """Put glibc's malloc thresholds back to their defaults; return whether it applied."""
    return _set_malloc(_GLIBC_DEFAULTS)


@contextmanager
def tuned_malloc(enabled: bool = True) -> Iterator[bool]:
    """Within the block, freed activation memory stays in the process; yields whether it applied."""
    applied = tune_malloc() if enabled else False
    try:
        yield applied
    finally:
        if applied:
            reset_malloc()


def _openmp_library() -> ctypes.CDLL | None:
    """The libgomp that torch's intra-op threads run on (already loaded by torch), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libgomp" in line and line.rstrip().endswith((".so", ".so.1"))}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
            library.GOMP_parallel  # GOMP 4.0's entry point; older libraries lack it
            return library
        except (OSError, AttributeError):
            continue
    return None


_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _set_flush_everywhere(on: bool) -> None:
    """``torch.set_flush_denormal(on)`` on this thread and on every thread of torch's OpenMP team."""
    torch.set_flush_denormal(on)
    library = _openmp_library()
    n = torch.get_num_threads()
    if library is None or n <= 1:
        return

    def each_thread(_):  # runs once in every thread of the team, the calling thread included
        torch.set_flush_denormal(on)

    callback = _CALLBACK(each_thread)
    library.GOMP_parallel.argtypes = [_CALLBACK, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    library.GOMP_parallel.restype = None
    library.GOMP_parallel(callback, None, n, 0)


_SUBNORMAL = 1e-39  # below float32's smallest normal, 2**-126 ≈ 1.18e-38


def flushes_denormals() -> bool:
    """Whether every torch thread now flushes subnormal float32 results to zero: a parallel
    elementwise product over enough elements to reach every thread must come out all zeros."""
    x = torch.full((max(1, torch.get_num_threads()) * 65_536,), _SUBNORMAL)
    return bool(((x * 1.0) == 0).all())


@contextmanager
def flushed_denormals(enabled: bool = True) -> Iterator[bool]:
    """Within the block, float32 (and float64) subnormals are flushed to zero on every torch
    thread; the previous state comes back afterwards. Yields whether every thread flushes (False:
    not asked, not supported by this CPU, or torch's threads are not on libgomp, in which case
    the flags are put back and nothing changes).

    Set the thread count first (:func:`torch_threads`): the flags are set on the OpenMP team of
    the current size."""
    if not enabled:
        yield False
        return
    before = flushes_denormals()
    applied = False
    try:
        _set_flush_everywhere(True)
        applied = flushes_denormals()
        if not applied:
            _set_flush_everywhere(before)
        yield applied
    finally:
        if applied and not before:
            _set_flush_everywhere(False)


@contextmanager
def denormal_mode(flush: bool) -> Iterator[bool]:
    """Within the block, subnormals are flushed to zero on every torch thread (``flush``) or kept
    (not ``flush``), whatever the state outside; the state outside comes back afterwards. Yields
    whether the asked mode holds on every thread. (:func:`flushed_denormals` is the trainers' form.)"""
    before = flushes_denormals()
    _set_flush_everywhere(flush)
    try:
        yield flushes_denormals() == flush
    finally:
        _set_flush_everywhere(before)


def default_threads() -> int:
    """The torch thread count training uses unless told otherwise: 1.

    Measured on 2-core machines (docs/training.md; experiments/benchmarks/thread_speed.py), p=113
    paper config, ms/epoch: 1 thread 71 idle / 116 beside a two-thread matmul job; 2 threads
    48-164 idle / 167-711 busy (median 208, 1.8x one thread's, past the 1.5x we accept). Two
    OpenMP threads win only on a truly idle machine; when another job holds a core they wait on
    each other and a step gets many times slower, while one thread never collapses.
    ``MECHGROK_THREADS`` overrides it.
    """
    value = os.environ.get("MECHGROK_THREADS")
    if value is None:
        return 1
    return check_threads(value, "MECHGROK_THREADS")


def check_threads(value: object, name: str = "threads") -> int:
    """``value`` as a thread count >= 1, or a ``ValueError`` naming it and the fix."""
    try:
        n = int(value)  # type: ignore[call-overload]
        if isinstance(value, bool) or isinstance(value, float) or n < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be an integer >= 1 (torch threads); pass e.g. {name}=1") from None
    return n


# The count of the innermost explicit ``torch_threads(n)`` block, so that code inside it that asks
# for the default (``train(threads=None)`` in a sweep, say) inherits the caller's choice.
_chosen: contextvars.ContextVar[int | None] = contextvars.ContextVar("mechgrok_threads", default=None)


def resolve_threads(threads: int | None = None) -> int:
    """The thread count ``threads`` stands for: itself if given, else the count of the enclosing
    explicit :func:`torch_threads` block, else :func:`default_threads`."""
    if threads is not None:
        return check_threads(threads)
    chosen = _chosen.get()
    return default_threads() if chosen is None else chosen


@contextmanager
def torch_threads(threads: int | None = None) -> Iterator[int]:
    """Within the block, torch uses ``threads`` intra-op threads; ``None`` means
    :func:`resolve_threads` (an enclosing block's count, else :func:`default_threads`).
    The previous count comes back afterwards. Yields the count in use."""
    n = resolve_threads(threads)
    token = _chosen.set(n) if threads is not None else None
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)
        if token is not None:
            _chosen.reset(token)
