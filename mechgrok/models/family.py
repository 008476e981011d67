"""What a model family is: how to build one, its hook points, ablation sites and weight names.

A family is registered by name in :mod:`mechgrok.registry`; ``Config.family`` picks it. The
analyses read a model only through its family's hook names and sites, so an ablation written
once works on every family that offers the site.
"""

from __future__ import annotations

import importlib

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mechgrok.hooks import Site

__all__ = ["ModelFamily"]


@dataclass(frozen=True)
class ModelFamily:
    """One kind of model.

    * ``build(cfg)`` returns an initialised ``HookedRootModule`` for the config (seeded by
      ``cfg.seed``; the global RNG is left alone).
    * ``hook_shapes``: every hook point's name and its activation's shape in the axis glossary
      of :mod:`mechgrok.hooks`; ``hook_meanings`` says what each holds.
    * ``sites``: the named ablation sites (``"embeddings"``, ``"neurons"``, ``"logits"`` ...).
    * ``parameter_names``: the canonical weight names, in build order; ``buffer_names`` the
      non-weight buffers that checkpoints leave out.
    * ``fast_step``: ``"module:Class"`` of a class with the interface of
      :class:`mechgrok.models.fastpath.FastPath` that computes the exact loss and gradients
      faster than the generic forward, or None. It is imported on first use
      (:meth:`load_fast_step`).
    * ``neuron_logit_map(model)``: W_L [neuron, c], the map from neuron activations to logits
      that the circuits readouts use (None: the family has no single hidden layer).
    * ``trainer``: which trainer trains it (:attr:`training`): ``"fast"`` (``mechgrok.train`` on
      the fast step), ``"stack"`` (:func:`mechgrok.training.stack.train_stack`, many models at
      once) or ``"sequence"`` (:mod:`mechgrok.training.sequence`, a plain forward and autograd
      over any loss positions). None: ``"fast"`` with a fast step, else ``"stack"``.
    * ``stacked_step``: ``"module:Class"`` of a step over stacked weights (the interface of
      :class:`mechgrok.models.stacked_fastpath.StackedFastPath`) with which
      :func:`mechgrok.training.stack.train_stack` also trains a family whose own trainer is
      another (the transformer's: many seeds at once on a GPU), or None. A single run still
      uses ``trainer``; the stack is asked for by calling ``train_stack``.
    """

    name: str
    build: Callable[[Any], Any]
    hook_shapes: Mapping[str, str]
    hook_meanings: Mapping[str, str]
    sites: Mapping[str, Site]
    parameter_names: tuple[str, ...]
    buffer_names: frozenset[str] = field(default_factory=frozenset)
    fast_step: str | None = None
    description: str = ""
    neuron_logit_map: Callable[[Any], Any] | None = None
    trainer: str | None = None
    stacked_step: str | None = None

    @property
    def training(self) -> str:
        """The trainer that trains this family: "fast", "stack" or "sequence"."""
        return self.trainer or ("fast" if self.fast_step is not None else "stack")

    def load_fast_step(self) -> type:
        """The fast-step class, or a ``ValueError`` if this family has none."""
        if self.fast_step is None:
            raise ValueError(f"the {self.name} family has no exact fast step; train it with the generic loop")
        module, _, name = self.fast_step.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def stackable(self) -> bool:
        """Whether :func:`mechgrok.training.stack.train_stack` trains this family."""
        return self.training == "stack" or self.stacked_step is not None

    def load_stacked_step(self) -> type | None:
        """The stacked-step class (imported on first use), or None if the family declares none."""
        if self.stacked_step is None:
            return None
        module, _, name = self.stacked_step.partition(":")
        return getattr(importlib.import_module(module), name)

    def site(self, name: str) -> Site:
        """The ablation site ``name``, or a ``ValueError`` listing the ones this family has."""
        if name not in self.sites:
            raise ValueError(f"site={name!r} is not one of the {self.name} family's sites {list(self.sites)}; pass e.g. site='logits'")
        return self.sites[name]
