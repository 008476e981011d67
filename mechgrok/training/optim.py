"""The optimiser of every run: AdamW over the trainable parameters, with a linear warm-up.

The learning rate of step e (0-based) is ``lr * min(e / warmup_steps, 1)``, as in the
original code. The optimiser's state is saved and restored by parameter name, so a resumed
run continues exactly.
"""

from __future__ import annotations

import torch

from mechgrok.config import Config

__all__ = ["trainable", "make_optimizer", "optimizer_tensors", "load_optimizer_tensors", "lr_at"]


def trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.AdamW:
    params = [p for _, p in trainable(model)]
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas, fused=True)


def optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state, keyed ``<param name>.<state key>``."""
    out = {}
    for name, param in trainable(model):
        for key, value in optimizer.state.get(param, {}).items():
            out[f"{name}.{key}"] = value.detach().clone() if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    for name, param in trainable(model):
        state = {key.removeprefix(name + "."): t.clone() for key, t in tensors.items() if key.startswith(name + ".")}
        if state:
            optimizer.state[param] = state


def lr_at(cfg: Config, step: int) -> float:
    return cfg.lr * (min(step / cfg.warmup_steps, 1.0) if cfg.warmup_steps else 1.0)
