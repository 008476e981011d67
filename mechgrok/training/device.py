"""Where training runs: a torch device checked once, and models moved onto it quietly."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "to_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that this torch can train on, or a ``ValueError`` with the fix."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a torch device; pass device='cpu' or device='cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r}: CUDA is not available in this torch ({torch.__version__}, "
            "torch.cuda.is_available() is False); pass --device cpu (device='cpu')"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r} is not supported by mechgrok's trainers; pass device='cpu' or device='cuda'")
    return dev


def to_device(model: torch.nn.Module, dev: torch.device) -> torch.nn.Module:
    """The model on ``dev``, moved quietly (``HookedTransformer.to`` prints); a model already there
    is left as it is."""
    dev = torch.device(dev)
    if any(p.device != dev for p in model.parameters()):
        torch.nn.Module.to(model, dev)
        if hasattr(model, "cfg") and hasattr(model.cfg, "device"):
            model.cfg.device = dev
    return model
