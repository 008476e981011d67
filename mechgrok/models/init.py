"""Seeded weight initialisers shared by the MLP families (Pearce et al.'s code's choices).

* ``truncated_normal(shape, std, g)``: N(0, std²) redrawn outside ±2 std (std before truncation).
* ``lecun_truncated(shape, fan_in, g)``: the linear layers, std 1/√fan_in.
* ``variance_scaling(shape, fan_in, scale, g)``: truncated normal whose variance after truncation
  is scale / fan_in (the explorable's embedding: scale 2, fan_in = the number of tokens).

Every draw uses the generator passed in, so the global RNG is left alone.
"""

from __future__ import annotations

import math

import torch

__all__ = ["truncated_normal", "lecun_truncated", "variance_scaling"]

# The std of a unit normal truncated to ±2: dividing by it makes the truncated draw's std exact.
_TRUNCATED_STD = 0.87962566103423978


def truncated_normal(shape: tuple[int, ...], std: float, generator: torch.Generator) -> torch.Tensor:
    out = torch.empty(shape)
    torch.nn.init.trunc_normal_(out, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=generator)
    return out


def lecun_truncated(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> torch.Tensor:
    return truncated_normal(shape, 1 / math.sqrt(fan_in), generator)


def variance_scaling(shape: tuple[int, ...], fan_in: int, scale: float, generator: torch.Generator) -> torch.Tensor:
    return truncated_normal(shape, math.sqrt(scale / fan_in) / _TRUNCATED_STD, generator)
