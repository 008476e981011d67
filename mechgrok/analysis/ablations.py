"""Interventions as hooks: Fourier-space ablations, restricted/excluded loss and the paper's §4.4.

Hook factories return ``fn(activation, hook) -> activation`` (TransformerLens's signature), to
be used inside ``with model.hooks(fwd_hooks=...)`` or ``model.run_with_hooks``. Three sites:

=============  ===========================  =================================================
site           hook point                   basis
=============  ===========================  =================================================
embeddings     ``hook_embed`` (pos 0, 1)    1D, over the residue of a (pos 0) and of b (pos 1)
neurons        ``blocks.0.mlp.hook_post``   2D over the input grid, at the ``=`` position
logits         ``unembed.hook_out``         2D over the input grid, at the ``=`` position
=============  ===========================  =================================================

Modes: ``"remove"`` subtracts the chosen frequencies' components; ``"keep"`` replaces the
activation by those components plus its mean over inputs (the paper's bias correction).
At the 2D sites, ``terms`` says what "frequency k" means (``mechgrok.fourier``):
``"sum"`` is the two directions cos/sin(w_k(a+b)) the algorithm uses; ``"all"`` is the eight
2D terms built from frequency k and the constant (the neuron-cluster definition).

Every site's hooks act on the whole batch at once, so the batch must be all p² inputs in grid
order (``ModularTask(p).tokens()``, index a*p + b). ``frequency_hooks`` adds a guard on ``hook_embed``
that raises ``ValueError`` when it is not; ``ablate_frequencies`` builds that batch for you.

Losses are float64 cross-entropy at the last position over the p task logits (a p+1 wide
unembed, as in old checkpoints, has its ``=`` logit dropped).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from typing import Any, Literal

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechgrok import hooks
from mechgrok.analysis import fourier
from mechgrok.runs import attached
from mechgrok.scoring import AblationResult, accuracy, cross_entropy, p_of_logits, score, task_logits

__all__ = [
    "SITES",
    "MODES",
    "AblationResult",
    "task_logits",
    "cross_entropy",
    "accuracy",
    "score",
    "evaluate",
    "grid_order_guard",
    "embedding_hook",
    "neuron_hook",
    "logit_hook",
    "frequency_hooks",
    "ablate_frequencies",
    "restricted_logits",
    "excluded_logits",
    "restricted_loss",
    "excluded_loss",
    "frequency_ablation_losses",
    "cluster_approximation_hook",
    "neuron_projection_hook",
    "SECTION_4_4_INTERVENTIONS",
    "section_4_4_table",
]

HookFn = Callable[[Tensor, Any], Tensor]
Site = Literal["embeddings", "neurons", "logits"]
Mode = Literal["remove", "keep"]
SITES: tuple[str, ...] = ("embeddings", "neurons", "logits")
MODES: tuple[str, ...] = ("remove", "keep")


def _grid_task(model: torch.nn.Module):
    info = attached(model)
    if info.task.n_pairs != info.task.p**2:
        raise ValueError(
            f"op={info.task.op!r} does not use the full p×p grid, so Fourier-grid ablations are undefined; "
            "use an operation other than 'div'"
        )
    return info


def evaluate(model: torch.nn.Module, fwd_hooks: Sequence[tuple[str, HookFn]] = ()) -> AblationResult:
    """Run the model on all p² inputs (grid order) with ``fwd_hooks`` applied, and score it.

    The hooks live only inside ``with model.hooks(...)``, so none remain afterwards, even on error.
    """
    info = _grid_task(model)
    tokens = info.task.tokens().to(model.W_E.device)
    with torch.no_grad(), model.hooks(fwd_hooks=list(fwd_hooks)):
        logits = model(tokens)[:, -1]
    return score(logits, info.task.labels(), info.split)


# ----------------------------------------------------------------------------- hook factories
def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}; pass mode='remove' or mode='keep'")


def _ablate(x: Tensor, directions: Tensor, mode: str) -> Tensor:
    """Ablate along axis 0 of x: remove the span, or keep the span plus the mean over axis 0."""
    if mode == "remove":
        return fourier.remove_span(x, directions)
    mean = x.double().mean(dim=0, keepdim=True)
    return (mean + fourier.project_onto(x.double() - mean, directions)).to(x.dtype)


def _check_batch(activation: Tensor, p: int, name: str) -> None:
    if activation.shape[0] != p * p:
        raise ValueError(
            f"the {name} hook needs all p²={p * p} inputs in grid order (index a*p + b), but the batch has "
            f"{activation.shape[0]}; run the model on ModularTask(p).tokens() or use ablate_frequencies"
        )


def grid_order_guard(p: int, W_E: Float[Tensor, "d_vocab d_model"] | None = None) -> HookFn:
    """A ``hook_embed`` hook that raises ``ValueError`` unless the batch is all p² inputs in grid order.

    With ``W_E`` the check is exact (row a*p + b embeds a and b). Without it, it checks the
    structure: a is constant over b (position 0) and b over a (position 1).
    """

    def guard(activation: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
        _check_batch(activation, p, "grid-order guard")
        grid = fourier.to_grid(activation[:, :2], p)  # [a, b, pos, d_model]
        if W_E is not None:
            rows = W_E[:p].to(activation)
            ok = torch.equal(grid[:, :, 0], rows[:, None].expand_as(grid[:, :, 0])) and torch.equal(
                grid[:, :, 1], rows[None, :].expand_as(grid[:, :, 1])
            )
        else:
            ok = torch.equal(grid[:, :, 0], grid[:, :1, 0].expand_as(grid[:, :, 0])) and torch.equal(
                grid[:, :, 1], grid[:1, :, 1].expand_as(grid[:, :, 1])
            )
        if not ok:
            raise ValueError(
                "the batch is not all p² inputs in grid order (row a*p + b must hold [a, b, =]); "
                "run the model on ModularTask(p).tokens() or use ablate_frequencies"
            )
        return activation

    return guard


def embedding_hook(p: int, ks: Iterable[int], mode: Mode = "remove") -> HookFn:
    """A ``hook_embed`` hook that ablates frequencies ``ks`` of the a and b embeddings (1D basis).

    Position 0's embedding is a function of a only; over the grid it is ablated along a, and
    position 1's along b. ``remove`` gives the rows of W_E with the cos k / sin k components
    subtracted; ``keep`` the mean row plus those components. The ``=`` position is untouched.
    """
    _check_mode(mode)
    directions = fourier.frequency_directions_1d(p, ks)

    def hook_fn(activation: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
        _check_batch(activation, p, "embedding")
        out = activation.clone()
        grid = fourier.to_grid(activation, p)  # [a, b, pos, d_model]
        a_side = _ablate(grid[:, :, 0], directions, mode)  # axis 0 is a
        b_side = _ablate(grid[:, :, 1].transpose(0, 1), directions, mode).transpose(0, 1)  # axis 0 is b
        out[:, 0] = fourier.from_grid(a_side)
        out[:, 1] = fourier.from_grid(b_side)
        return out

    return hook_fn


def _grid_site_hook(p: int, ks: Iterable[int], mode: str, terms: str, name: str) -> HookFn:
    _check_mode(mode)
    directions = fourier.frequency_directions_2d(p, ks, terms)

    def hook_fn(activation: Tensor, hook: Any) -> Tensor:
        _check_batch(activation, p, name)
        out = activation.clone()
        out[:, hooks.EQUALS_POS] = _ablate(activation[:, hooks.EQUALS_POS], directions, mode)
        return out

    return hook_fn


def neuron_hook(p: int, ks: Iterable[int], mode: Mode = "remove", terms: fourier.Terms = "sum") -> HookFn:
    """A ``blocks.0.mlp.hook_post`` hook that ablates frequencies ``ks`` of every neuron's activation
    over the input grid, at the ``=`` position. See the module docstring for ``mode`` and ``terms``."""
    return _grid_site_hook(p, ks, mode, terms, "neuron")


def logit_hook(p: int, ks: Iterable[int], mode: Mode = "remove", terms: fourier.Terms = "sum") -> HookFn:
    """An ``unembed.hook_out`` hook that ablates frequencies ``ks`` of every logit over the input
    grid, at the ``=`` position. See the module docstring for ``mode`` and ``terms``."""
    return _grid_site_hook(p, ks, mode, terms, "logit")


SITE_HOOKS = {"embeddings": hooks.EMBED, "neurons": hooks.MLP_POST, "logits": hooks.LOGITS}


def frequency_hooks(
    p: int,
    ks: Iterable[int],
    site: Site = "logits",
    mode: Mode = "remove",
    terms: fourier.Terms = "sum",
    W_E: Tensor | None = None,
) -> list[tuple[str, HookFn]]:
    """``fwd_hooks`` for ``model.hooks``: a grid-order guard, then the ablation at ``site``.

    >>> with model.hooks(fwd_hooks=frequency_hooks(113, [14, 35], site="neurons", mode="keep")):
    ...     logits = model(ModularTask(113).tokens())
    """
    if site not in SITES:
        raise ValueError(f"site={site!r} is not one of {SITES}; pass e.g. site='logits'")
    _check_mode(mode)
    if site != "embeddings" and terms not in fourier.TERMS:
        raise ValueError(f"terms={terms!r} is not one of {fourier.TERMS}; pass terms='sum' or terms='all'")
    if site == "embeddings":
        fn = embedding_hook(p, ks, mode)
    elif site == "neurons":
        fn = neuron_hook(p, ks, mode, terms)
    else:
        fn = logit_hook(p, ks, mode, terms)
    return [(hooks.EMBED, grid_order_guard(p, W_E)), (SITE_HOOKS[site], fn)]


def ablate_frequencies(
    model: torch.nn.Module,
    ks: Iterable[int],
    site: Site = "logits",
    mode: Mode = "remove",
    terms: fourier.Terms = "sum",
) -> AblationResult:
    """Loss and accuracy of ``model`` on train, test and all inputs with frequencies ``ks`` ablated.

    ``site`` is "embeddings", "neurons" or "logits"; ``mode`` "remove" or "keep" (keep only
    ``ks``, plus the mean); ``terms`` "sum" or "all" at the 2D sites (module docstring; the 1D
    embedding site has just cos k and sin k per frequency, so ``terms`` does not apply). The
    model must carry its task and split (``build_model(cfg, split=...)``, ``load_run``). No hook
    remains registered afterwards.

    >>> ablate_frequencies(model, [14, 35, 41, 42, 52], mode="keep").loss_all
    """
    info = _grid_task(model)
    fwd_hooks = frequency_hooks(info.task.p, ks, site=site, mode=mode, terms=terms, W_E=model.W_E.detach())
    return evaluate(model, fwd_hooks)


# ----------------------------------------------------------------------------- restricted / excluded
def restricted_logits(logits: Float[Tensor, "batch d_vocab_out"], key_freqs: Iterable[int]) -> Float[Tensor, "batch c"]:
    """The logits projected onto cos/sin(w_k(a+b)) of the key frequencies, plus each class's mean (float64)."""
    p = p_of_logits(logits)
    x = task_logits(logits, p).double()
    return _ablate(x, fourier.frequency_directions_2d(p, key_freqs, "sum"), "keep")


def excluded_logits(logits: Float[Tensor, "batch d_vocab_out"], key_freqs: Iterable[int]) -> Float[Tensor, "batch c"]:
    """The logits minus their projection onto cos/sin(w_k(a+b)) of the key frequencies (float64)."""
    p = p_of_logits(logits)
    x = task_logits(logits, p).double()
    return _ablate(x, fourier.frequency_directions_2d(p, key_freqs, "sum"), "remove")


def restricted_loss(
    logits: Float[Tensor, "batch d_vocab_out"], labels: Int[Tensor, "batch"], key_freqs: Iterable[int]
) -> float:
    """docs/concepts.md: the loss over all p² inputs of ``restricted_logits``.

    ``logits`` are the last-position logits over all p² inputs in grid order.
    """
    return cross_entropy(restricted_logits(logits, key_freqs), labels).item()


def excluded_loss(
    logits: Float[Tensor, "batch d_vocab_out"],
    labels: Int[Tensor, "batch"],
    key_freqs: Iterable[int],
    train: Int[Tensor, "n_train"],
) -> float:
    """docs/concepts.md: the loss of ``excluded_logits`` on the train inputs only (indices ``train``)."""
    return cross_entropy(excluded_logits(logits, key_freqs)[train], labels[train]).item()


def frequency_ablation_losses(
    logits: Float[Tensor, "batch d_vocab_out"],
    labels: Int[Tensor, "batch"],
    split: Any = None,
    key_freqs: Iterable[int] = (),
) -> pd.DataFrame:
    """Remove each frequency k = 1..K from the logits (its cos/sin(w_k(a+b)) directions) in turn.

    Returns one row per k with ``loss_all`` (the paper's Fig. 6) and, when ``split`` is given,
    ``loss_train`` (the per-frequency excluded loss) and ``loss_test``; ``key`` marks ``key_freqs``.
    """
    p = p_of_logits(logits)
    x = task_logits(logits, p).double()
    keys = set(fourier.check_frequencies(key_freqs, p))
    rows = []
    for k in fourier.frequencies(p):
        ablated = _ablate(x, fourier.frequency_directions_2d(p, [k], "sum"), "remove")
        row: dict[str, Any] = {"frequency": k, "key": k in keys, "loss_all": cross_entropy(ablated, labels).item()}
        if split is not None:
            row["loss_train"] = cross_entropy(ablated[split.train], labels[split.train]).item()
            row["loss_test"] = cross_entropy(ablated[split.test], labels[split.test]).item()
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- §4.4 interventions
def cluster_approximation_hook(p: int, neuron_frequency: Mapping[int, int]) -> HookFn:
    """A ``blocks.0.mlp.hook_post`` hook that replaces each listed neuron by its single-frequency
    degree-2 approximation: its mean plus its projection onto the eight 2D terms of its frequency.

    ``neuron_frequency`` maps neuron index -> frequency (e.g. the clustered rows of
    ``circuits.neuron_clusters``); other neurons are untouched.
    """
    groups: dict[int, list[int]] = {}
    for neuron, k in neuron_frequency.items():
        groups.setdefault(int(k), []).append(int(neuron))
    directions = {k: fourier.frequency_directions_2d(p, [k], "all") for k in groups}

    def hook_fn(activation: Float[Tensor, "batch pos neuron"], hook: Any) -> Tensor:
        _check_batch(activation, p, "cluster approximation")
        out = activation.clone()
        last = activation[:, hooks.EQUALS_POS]
        for k, neurons in groups.items():
            idx = torch.tensor(neurons, device=activation.device)
            out[:, hooks.EQUALS_POS, idx] = _ablate(last[:, idx], directions[k], "keep")
        return out

    return hook_fn


def neuron_projection_hook(
    directions: Float[Tensor, "direction neuron"], onto: Literal["span", "null"] = "span"
) -> HookFn:
    """A ``blocks.0.mlp.hook_post`` hook that projects each input's neuron-activation vector (at
    the ``=`` position) onto the span of ``directions``, or onto its orthogonal complement.

    With the 2K W_L directions u_k, v_k (``circuits.neuron_logit_fit``) this is the paper's
    "project the MLP output onto the W_L directions / their null space". Works on any batch.
    """
    if onto not in ("span", "null"):
        raise ValueError(f"onto={onto!r} is not 'span' or 'null'; pass onto='span' or onto='null'")

    def hook_fn(activation: Float[Tensor, "batch pos neuron"], hook: Any) -> Tensor:
        if directions.shape[-1] != activation.shape[-1]:
            raise ValueError(
                f"directions are {directions.shape[-1]}-dimensional but the model has {activation.shape[-1]} neurons"
            )
        out = activation.clone()
        last = activation[:, hooks.EQUALS_POS].T  # [neuron, batch]: project along the neuron axis
        proj = fourier.project_onto(last, directions) if onto == "span" else fourier.remove_span(last, directions)
        out[:, hooks.EQUALS_POS] = proj.T
        return out

    return hook_fn


# The §4.4 interventions (Nanda et al. §4.4), in the order of section_4_4_table's rows.
SECTION_4_4_INTERVENTIONS: tuple[str, ...] = (
    "original",
    "clustered neurons -> single-frequency degree-2 approximation",
    "neurons: keep only cos/sin(w_k(a+b)) of key frequencies",
    "MLP output projected onto the 2K W_L directions",
    "MLP output projected onto the null space of the W_L directions",
    "logits: keep only the 2D terms of key frequencies",
    "logits: keep only cos/sin(w_k(a+b)) of key frequencies (restricted loss)",
    "logits: remove cos/sin(w_k(a+b)) of key frequencies",
)


def section_4_4_table(
    model: torch.nn.Module,
    key_freqs: Iterable[int],
    neuron_frequency: Mapping[int, int],
    wl_directions: Float[Tensor, "direction neuron"],
) -> pd.DataFrame:
    """The paper's §4.4 ablations on ``model``: one row per intervention of
    ``SECTION_4_4_INTERVENTIONS`` (``mechgrok.reproduce.nanda2023`` has the paper's losses).

    ``neuron_frequency``: the clustered neurons and their frequencies; ``wl_directions``: the 2K
    u_k, v_k of the W_L fit. Both come from ``mechgrok.circuits``. Losses are on all p² inputs.
    """
    info = _grid_task(model)
    p = info.task.p
    ks = fourier.check_frequencies(key_freqs, p)
    W_E = model.W_E.detach()
    guard = (hooks.EMBED, grid_order_guard(p, W_E))
    names = list(SECTION_4_4_INTERVENTIONS)
    interventions: list[list[tuple[str, HookFn]]] = [
        [],
        [guard, (hooks.MLP_POST, cluster_approximation_hook(p, neuron_frequency))],
        frequency_hooks(p, ks, site="neurons", mode="keep", terms="sum", W_E=W_E),
        [(hooks.MLP_POST, neuron_projection_hook(wl_directions, "span"))],
        [(hooks.MLP_POST, neuron_projection_hook(wl_directions, "null"))],
        frequency_hooks(p, ks, site="logits", mode="keep", terms="all", W_E=W_E),
        frequency_hooks(p, ks, site="logits", mode="keep", terms="sum", W_E=W_E),
        frequency_hooks(p, ks, site="logits", mode="remove", terms="sum", W_E=W_E),
    ]
    rows = []
    for name, fwd_hooks in zip(names, interventions):
        result = evaluate(model, fwd_hooks)
        rows.append(
            {
                "intervention": name,
                "loss": result.loss_all,
                "accuracy": result.accuracy_all,
                "loss_train": result.loss_train,
                "loss_test": result.loss_test,
            }
        )
    return pd.DataFrame(rows)
