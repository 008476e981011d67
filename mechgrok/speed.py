"""Process-level settings that make every training step faster (docs/training.md).

Both change process-wide state, so :func:`mechgrok.train.train` applies them only when asked
(``tune_process=True``, the default of the CLI and of ``train``):

* **oneDNN float32 GEMMs.** ``torch.set_float32_matmul_precision("medium")`` routes CPU
  float32 matmuls to oneDNN, about twice as fast as MKL's AVX2 path on AMD CPUs. The setting
  formally permits bf16 on hardware that has it, so we keep it only if a probe GEMM still
  agrees with float64 to float32 accuracy; otherwise we put the old setting back.
* **glibc malloc thresholds.** By default every step returns tens of MB of activations to the
  kernel and page-faults them back in. Raising the mmap and trim thresholds (``mallopt``)
  keeps that memory in the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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


def tune_malloc() -> bool:
    """Keep freed activation memory in the process (glibc only); return whether it applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    ok &= mallopt(_M_TOP_PAD, 256 * 2**20)
    return bool(ok)


def tune_process() -> dict[str, bool]:
    """Apply both settings; return which took effect."""
    return {"fast_float32_matmul": enable_fast_float32_matmul(), "malloc": tune_malloc()}
