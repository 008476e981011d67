"""Tasks and model families by name.

A registry entry is ``"module:attribute"``, imported on first use, so naming a family costs
nothing until it is built (``import mechgrok`` stays free of TransformerLens). Adding a task or
a family is one new module plus one line here (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mechgrok.models.family import ModelFamily

__all__ = ["TASKS", "FAMILIES", "FAMILY_TASKS", "FAMILY_ACTIVATIONS", "SYMMETRIC_FAMILIES", "task_class", "family", "register_task", "register_family"]

# task kind -> "module:Class" of a mechgrok.tasks.base.Task subclass
TASKS: dict[str, str] = {
    "modular": "mechgrok.tasks.modular:ModularTask",
    "parity": "mechgrok.tasks.parity:ParityTask",
    # the Alignment Forum post's sequence tasks (mechgrok.tasks.sequence)
    "addition": "mechgrok.tasks.sequence:AdditionTask",
    "induction": "mechgrok.tasks.sequence:InductionTask",
    "max_list": "mechgrok.tasks.sequence:MaxListTask",
}

# family name -> "module:attribute" of a mechgrok.models.family.ModelFamily
FAMILIES: dict[str, str] = {
    "transformer": "mechgrok.models.transformer:FAMILY",
    # Pearce et al.'s one-hidden-layer MLPs on a+b mod p (mechgrok.models.mlp)
    "mlp": "mechgrok.models.mlp:TIED",
    "mlp_unfactored": "mechgrok.models.mlp:UNFACTORED",
    "mlp_collapsed_in": "mechgrok.models.mlp:COLLAPSED_IN",
    "mlp_collapsed_out": "mechgrok.models.mlp:COLLAPSED_OUT",
    "circle": "mechgrok.models.circle:FAMILY",
    "mlp2": "mechgrok.models.mlp2:FAMILY",  # the post's plain 2-layer MLP on onehot(a) + onehot(b)
    "parity_mlp": "mechgrok.models.parity:FAMILY",
    # a HookedTransformer of any depth, with or without MLPs, on the sequence tasks (mechgrok.models.sequence)
    "sequence_transformer": "mechgrok.models.sequence:FAMILY",
}

# family name -> the task, or tuple of tasks, it trains on (absent: "modular"); read by Config
# without importing it (config.family_tasks_of)
FAMILY_TASKS: dict[str, str | tuple[str, ...]] = {
    "parity_mlp": "parity",
    "sequence_transformer": ("addition", "induction", "max_list"),
}

# families whose output is symmetric in a and b (E[a] W_in + E[b] W_in): they can train on the
# unordered pairs a <= b, and only on commutative operations
SYMMETRIC_FAMILIES: frozenset[str] = frozenset({"mlp", "mlp_unfactored", "mlp_collapsed_in", "mlp_collapsed_out", "circle", "mlp2"})

# family name -> the activation functions it offers (absent: relu only)
FAMILY_ACTIVATIONS: dict[str, tuple[str, ...]] = {"circle": ("relu", "x2")}


def _load(table: dict[str, str], kind: str, name: str) -> Any:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; registered {kind}s are {sorted(table)}")
    module, _, attribute = table[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def task_class(name: str) -> type:
    """The task class registered as ``name``."""
    return _load(TASKS, "task", name)


def family(name: str) -> ModelFamily:
    """The model family registered as ``name``."""
    return _load(FAMILIES, "family", name)


def register_task(name: str, target: str) -> None:
    """Register ``"module:Class"`` as task ``name`` (for extensions outside mechgrok)."""
    _register(TASKS, "task", name, target)


def register_family(name: str, target: str, *, task: str | tuple[str, ...] = "modular") -> None:
    """Register ``"module:attribute"`` (a ``ModelFamily``) as family ``name``, trained on ``task``
    (a task name, or a tuple of them)."""
    tasks = (task,) if isinstance(task, str) else tuple(task)
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"task={t!r} is not a registered task {sorted(TASKS)}; register the task first")
    _register(FAMILIES, "family", name, target)
    if tasks != ("modular",):
        FAMILY_TASKS[name] = task


def _register(table: dict[str, str], kind: str, name: str, target: str) -> None:
    if not isinstance(target, str) or ":" not in target:
        raise ValueError(f"target={target!r} must be 'module:attribute'")
    if name in table and table[name] != target:
        raise ValueError(f"{kind} {name!r} is already registered as {table[name]!r}; pick another name")
    table[name] = target
