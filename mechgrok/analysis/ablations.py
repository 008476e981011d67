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

The sites are the model family's (``registry.family(cfg.family).site(name)``, a
:class:`mechgrok.hooks.Site`), and every hook edits its activation through ``Site.apply``.

Modes: ``"remove"`` subtracts the chosen frequencies' components; ``"keep"`` replaces the
activation by those components plus its mean over inputs (the paper's bias correction).
At the 2D sites, ``terms`` says what "frequency k" means (``mechgrok.analysis.fourier``):
``"sum"`` is the two directions cos/sin(w_k(a + s·b)) the algorithm uses; ``"all"`` is the eight
2D terms built from frequency k and the constant (the neuron-cluster definition).

Valid tasks: modular arithmetic with op='add' (s = +1, directions of a+b) or op='sub'
(s = -1, a-b). The entry points that take a model (``ablate_frequencies``,
``section_4_4_table``) read s from the run's task and raise ``ValueError`` for every other
operation. The functions of tensors alone (hook factories, ``restricted_loss`` ...) take it as
the keyword ``sign``, default +1 (addition): pass ``require_fourier(task, ...)`` for a sub run.

Every site's hooks act on the whole batch at once, so the batch must be all p² inputs in grid
order (``ModularTask(p).tokens()``, index a*p + b). ``frequency_hooks`` adds a guard on ``hook_embed``
that raises ``ValueError`` when it is not; ``ablate_frequencies`` builds that batch for you.

Losses are float64 cross-entropy at the last position over the p task logits (a p+1 wide
unembed, as in old checkpoints, has its ``=`` logit dropped).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from typing import Any, Literal

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechgrok import hooks, registry
from mechgrok.hooks import HookFn
from mechgrok.analysis import fourier
from mechgrok.runs import RunInfo, attached
from mechgrok.tasks.modular import ModularTask, require_fourier
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
    "excluded_logits_train_fit",
    "excluded_loss_train_fit",
    "frequency_ablation_losses",
    "cluster_approximation_hook",
    "neuron_projection_hook",
    "SECTION_4_4_INTERVENTIONS",
    "section_4_4_interventions",
    "section_4_4_table",
]

SiteName = Literal["embeddings", "neurons", "logits"]
Mode = Literal["remove", "keep"]
SITES: tuple[str, ...] = ("embeddings", "neurons", "logits")
MODES: tuple[str, ...] = ("remove", "keep")
DEFAULT_FAMILY = "transformer"


def grid_task(model: torch.nn.Module, analysis: str = "running the model on the input grid") -> RunInfo:
    """The model's run info, if its task lists all p² pairs in grid order (every op but 'div')."""
    info = attached(model)
    if not isinstance(info.task, ModularTask):
        raise ValueError(f"{analysis} is defined for modular arithmetic only, not {info.task.describe()} "
                         f"(task={info.config.task!r})")
    if not info.task.is_grid:
        raise ValueError(
            f"{analysis} needs all p² pairs in grid order, but op={info.task.op!r} lists {info.task.n_pairs} "
            "(it drops b = 0); it is defined for every other operation"
        )
    return info


def _fourier_run(model: torch.nn.Module, analysis: str) -> tuple[RunInfo, int]:
    """The model's run info and its task's Fourier sign (+1 add, -1 sub); ValueError for other ops."""
    info = attached(model)
    return info, require_fourier(info.task, analysis)


def _site(name: str, family: str = DEFAULT_FAMILY) -> hooks.Site:
    """The ablation site ``name`` of model family ``family`` (``registry.family(...).sites``)."""
    return registry.family(family).site(name)


def evaluate(model: torch.nn.Module, fwd_hooks: Sequence[tuple[str, HookFn]] = ()) -> AblationResult:
    """Run the model on all p² inputs (grid order) with ``fwd_hooks`` applied, and score it.

    The hooks live only inside ``with model.hooks(...)``, so none remain afterwards, even on error.
    """
    info = grid_task(model, "evaluate")
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


def grid_order_guard(p: int, W_E: Float[Tensor, "d_vocab d_model"]) -> HookFn:
    """A ``hook_embed`` hook that raises ``ValueError`` unless the batch is all p² inputs in grid order.

    The check is exact: row a*p + b must embed [a, b] as ``W_E`` does. ``W_E`` is required: from
    the activations alone a batch whose residues are relabelled cannot be told from the grid.
    """
    _require_W_E(W_E, "grid_order_guard")

    def guard(activation: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
        _check_batch(activation, p, "grid-order guard")
        rows = W_E[:p].to(activation)
        if not bool(torch.isfinite(rows).all()):
            bad = (~torch.isfinite(rows)).any(dim=-1).nonzero().flatten().tolist()
            raise ValueError(
                f"W_E rows {bad[:5]}{' ...' if len(bad) > 5 else ''} (the embeddings of those residues) hold NaN or "
                "infinite values, so no ablation of this model means anything; its weights are damaged, or it diverged"
            )
        grid = fourier.to_grid(activation[:, :2], p)  # [a, b, pos, d_model]
        ok = torch.equal(grid[:, :, 0], rows[:, None].expand_as(grid[:, :, 0])) and torch.equal(
            grid[:, :, 1], rows[None, :].expand_as(grid[:, :, 1])
        )
        if not ok:
            raise ValueError(
                "the batch is not all p² inputs in grid order (row a*p + b must hold [a, b, =]); "
                "run the model on ModularTask(p).tokens() or use ablate_frequencies"
            )
        return activation

    return guard


def _require_W_E(W_E: Tensor | None, name: str) -> None:
    if not isinstance(W_E, Tensor) or W_E.ndim != 2:
        raise ValueError(
            f"{name} needs W_E=model.W_E (a [d_vocab, d_model] tensor, got {type(W_E).__name__}): its guard checks that "
            "the batch is all p² inputs in grid order against the embeddings, which no check of the activations alone "
            "can do (a batch with relabelled residues looks the same)"
        )


def embedding_hook(p: int, ks: Iterable[int], mode: Mode = "remove", *, site: hooks.Site | None = None) -> HookFn:
    """A ``hook_embed`` hook that ablates frequencies ``ks`` of the a and b embeddings (1D basis).

    Position 0's embedding is a function of a only; over the grid it is ablated along a, and
    position 1's along b. ``remove`` gives the rows of W_E with the cos k / sin k components
    subtracted; ``keep`` the mean row plus those components. The ``=`` position is untouched.
    The same for every operation (no a±b direction is involved). ``site``: default the
    transformer family's "embeddings" site.
    """
    _check_mode(mode)
    site = _site("embeddings") if site is None else site
    directions = fourier.frequency_directions_1d(p, ks)

    def ablate(x: Float[Tensor, "batch pos d_model"]) -> Tensor:
        out = x.clone()
        grid = fourier.to_grid(x, p)  # [a, b, pos, d_model]
        a_side = _ablate(grid[:, :, 0], directions, mode)  # axis 0 is a
        b_side = _ablate(grid[:, :, 1].transpose(0, 1), directions, mode).transpose(0, 1)  # axis 0 is b
        out[:, 0] = fourier.from_grid(a_side)
        out[:, 1] = fourier.from_grid(b_side)
        return out

    def hook_fn(activation: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
        _check_batch(activation, p, "embedding")
        return site.apply(activation, ablate)

    return hook_fn


def _grid_site_hook(p: int, ks: Iterable[int], mode: str, terms: str, sign: int, site: hooks.Site, name: str) -> HookFn:
    _check_mode(mode)
    directions = fourier.frequency_directions_2d(p, ks, terms, sign)

    def hook_fn(activation: Tensor, hook: Any) -> Tensor:
        _check_batch(activation, p, name)
        return site.apply(activation, lambda x: _ablate(x, directions, mode))

    return hook_fn


def neuron_hook(
    p: int, ks: Iterable[int], mode: Mode = "remove", terms: fourier.Terms = "sum", *, sign: int = +1,
    site: hooks.Site | None = None,
) -> HookFn:
    """A ``blocks.0.mlp.hook_post`` hook that ablates frequencies ``ks`` of every neuron's activation
    over the input grid, at the ``=`` position. See the module docstring for ``mode``, ``terms`` and
    ``sign`` (+1, the default, for op='add'; -1 for op='sub'). ``site``: default the transformer
    family's "neurons" site."""
    return _grid_site_hook(p, ks, mode, terms, sign, _site("neurons") if site is None else site, "neuron")


def logit_hook(
    p: int, ks: Iterable[int], mode: Mode = "remove", terms: fourier.Terms = "sum", *, sign: int = +1,
    site: hooks.Site | None = None,
) -> HookFn:
    """An ``unembed.hook_out`` hook that ablates frequencies ``ks`` of every logit over the input
    grid, at the ``=`` position. See the module docstring for ``mode``, ``terms`` and ``sign``
    (+1, the default, for op='add'; -1 for op='sub'). ``site``: default the transformer family's
    "logits" site."""
    return _grid_site_hook(p, ks, mode, terms, sign, _site("logits") if site is None else site, "logit")


def frequency_hooks(
    p: int,
    ks: Iterable[int],
    site: SiteName = "logits",
    mode: Mode = "remove",
    terms: fourier.Terms = "sum",
    W_E: Tensor | None = None,
    *,
    sign: int = +1,
    family: str = DEFAULT_FAMILY,
) -> list[tuple[str, HookFn]]:
    """``fwd_hooks`` for ``model.hooks``: a grid-order guard, then the ablation at ``site``.

    ``W_E`` (``model.W_E``) is required: the guard checks the batch against it (:func:`grid_order_guard`).

    ``sign``: +1 (default) for a model of op='add', -1 for op='sub' (module docstring);
    ``family``: the model family whose site is used (``Config.family``).

    >>> with model.hooks(fwd_hooks=frequency_hooks(113, [14, 35], site="neurons", mode="keep", W_E=model.W_E)):
    ...     logits = model(ModularTask(113).tokens())
    """
    if site not in SITES:
        raise ValueError(f"site={site!r} is not one of {SITES}; pass e.g. site='logits'")
    _check_mode(mode)
    fourier.check_sign(sign)
    if site != "embeddings" and terms not in fourier.TERMS:
        raise ValueError(f"terms={terms!r} is not one of {fourier.TERMS}; pass terms='sum' or terms='all'")
    _require_W_E(W_E, "frequency_hooks")
    where = _site(site, family)
    if site == "embeddings":
        fn = embedding_hook(p, ks, mode, site=where)
    elif site == "neurons":
        fn = neuron_hook(p, ks, mode, terms, sign=sign, site=where)
    else:
        fn = logit_hook(p, ks, mode, terms, sign=sign, site=where)
    return [(_site("embeddings", family).hook, grid_order_guard(p, W_E)), (where.hook, fn)]


def ablate_frequencies(
    model: torch.nn.Module,
    ks: Iterable[int],
    site: SiteName = "logits",
    mode: Mode = "remove",
    terms: fourier.Terms = "sum",
) -> AblationResult:
    """Loss and accuracy of ``model`` on train, test and all inputs with frequencies ``ks`` ablated.

    Valid for runs of op='add' (directions of a+b) and op='sub' (a-b), read from the run's
    task; any other operation raises ``ValueError``. ``site`` is "embeddings", "neurons" or
    "logits"; ``mode`` "remove" or "keep" (keep only ``ks``, plus the mean); ``terms`` "sum" or
    "all" at the 2D sites (module docstring; the 1D embedding site has just cos k and sin k per
    frequency, so ``terms`` does not apply). The model must carry its task and split
    (``build_model(cfg, split=...)``, ``load_run``). No hook remains registered afterwards.

    >>> ablate_frequencies(model, [14, 35, 41, 42, 52], mode="keep").loss_all
    """
    info, sign = _fourier_run(model, "ablate_frequencies")
    fwd_hooks = frequency_hooks(info.task.p, ks, site=site, mode=mode, terms=terms, W_E=model.W_E.detach(),
                                sign=sign, family=info.config.family)
    return evaluate(model, fwd_hooks)


# ----------------------------------------------------------------------------- restricted / excluded
# These take logits and labels, not a run: ``sign`` is +1 (default, op='add': a+b) or -1
# (op='sub': a-b), and the labels must be the run's task's labels (``task.labels()``).
def restricted_logits(
    logits: Float[Tensor, "batch d_vocab_out"], key_freqs: Iterable[int], *, sign: int = +1
) -> Float[Tensor, "batch c"]:
    """The logits projected onto cos/sin(w_k(a + sign·b)) of the key frequencies, plus each class's mean (float64)."""
    p = p_of_logits(logits)
    x = task_logits(logits, p).double()
    return _ablate(x, fourier.frequency_directions_2d(p, key_freqs, "sum", sign), "keep")


def excluded_logits(
    logits: Float[Tensor, "batch d_vocab_out"], key_freqs: Iterable[int], *, sign: int = +1
) -> Float[Tensor, "batch c"]:
    """The logits minus their projection onto cos/sin(w_k(a + sign·b)) of the key frequencies (float64)."""
    p = p_of_logits(logits)
    x = task_logits(logits, p).double()
    return _ablate(x, fourier.frequency_directions_2d(p, key_freqs, "sum", sign), "remove")


def restricted_loss(
    logits: Float[Tensor, "batch d_vocab_out"], labels: Int[Tensor, "batch"], key_freqs: Iterable[int], *,
    sign: int = +1,
) -> float:
    """docs/concepts.md: the loss over all p² inputs of ``restricted_logits``.

    ``logits`` are the last-position logits over all p² inputs in grid order; ``sign`` +1
    (default) for op='add', -1 for op='sub'.
    """
    return cross_entropy(restricted_logits(logits, key_freqs, sign=sign), labels).item()


def excluded_loss(
    logits: Float[Tensor, "batch d_vocab_out"],
    labels: Int[Tensor, "batch"],
    key_freqs: Iterable[int],
    train: Int[Tensor, "n_train"],
    *,
    sign: int = +1,
) -> float:
    """docs/concepts.md: the loss of ``excluded_logits`` on the train inputs only (indices ``train``).

    ``sign`` +1 (default) for op='add', -1 for op='sub'."""
    return cross_entropy(excluded_logits(logits, key_freqs, sign=sign)[train], labels[train]).item()


# The paper's excluded loss removes the key-frequency directions with coefficients fitted on all p²
# inputs (an orthogonal projection over the whole grid), so the train loss it reports depends on the
# test inputs' logits too; the Alignment Forum post points this out. The train-only variant fits
# the coefficients on the train rows alone.
def excluded_logits_train_fit(
    logits: Float[Tensor, "batch d_vocab_out"], key_freqs: Iterable[int], train: Int[Tensor, "n_train"], *,
    sign: int = +1,
) -> Float[Tensor, "n_train c"]:
    """The train rows' logits minus their key-frequency part, fitted on the train rows only (float64).

    Per class c, least squares over the train inputs: L[train, c] ≈ μ_c + Σ_j C_jc d_j[train], with d_j
    the cos/sin(w_k(a + sign·b)) directions of the key frequencies and μ_c a per-class constant; the
    result is L[train] − Σ_j C_jc d_j[train] (μ stays, as the paper's projection leaves the mean).
    Only the rows ``train`` of ``logits`` are read (``logits`` still spans all p² inputs in grid
    order, so that p and the directions are those of :func:`excluded_logits`). With every input
    in ``train`` it equals :func:`excluded_logits`, since on the whole grid the directions are
    orthonormal and orthogonal to constants.
    """
    p = p_of_logits(logits)
    train = torch.as_tensor(train, dtype=torch.long)
    x = task_logits(logits, p).double()[train]
    d = fourier.frequency_directions_2d(p, key_freqs, "sum", sign)[:, train].T  # [n_train, 2K]
    design = torch.cat([torch.ones(len(train), 1, dtype=torch.float64), d], dim=1)
    coef = torch.linalg.lstsq(design, x).solution  # [1 + 2K, c]
    return x - d @ coef[1:]


def excluded_loss_train_fit(
    logits: Float[Tensor, "batch d_vocab_out"],
    labels: Int[Tensor, "batch"],
    key_freqs: Iterable[int],
    train: Int[Tensor, "n_train"],
    *,
    sign: int = +1,
) -> float:
    """The train loss of :func:`excluded_logits_train_fit`: excluded loss with the directions'
    coefficients fitted on the train inputs alone, so no test input's logit enters it (beside the
    paper's :func:`excluded_loss`, fitted on all p² inputs). ``labels`` over all p² inputs."""
    train = torch.as_tensor(train, dtype=torch.long)
    return cross_entropy(excluded_logits_train_fit(logits, key_freqs, train, sign=sign), labels[train]).item()


def frequency_ablation_losses(
    logits: Float[Tensor, "batch d_vocab_out"],
    labels: Int[Tensor, "batch"],
    split: Any = None,
    key_freqs: Iterable[int] = (),
    *,
    sign: int = +1,
) -> pd.DataFrame:
    """Remove each frequency k = 1..K from the logits (its cos/sin(w_k(a + sign·b)) directions) in turn.

    Returns one row per k with ``loss_all`` (the paper's Fig. 6) and, when ``split`` is given,
    ``loss_train`` (the per-frequency excluded loss) and ``loss_test``; ``key`` marks ``key_freqs``.
    ``sign`` +1 (default) for op='add', -1 for op='sub'.
    """
    p = p_of_logits(logits)
    x = task_logits(logits, p).double()
    keys = set(fourier.check_frequencies(key_freqs, p))
    fourier.check_sign(sign)
    rows = []
    for k in fourier.frequencies(p):
        ablated = _ablate(x, fourier.frequency_directions_2d(p, [k], "sum", sign), "remove")
        row: dict[str, Any] = {"frequency": k, "key": k in keys, "loss_all": cross_entropy(ablated, labels).item()}
        if split is not None:
            row["loss_train"] = cross_entropy(ablated[split.train], labels[split.train]).item()
            row["loss_test"] = cross_entropy(ablated[split.test], labels[split.test]).item()
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- §4.4 interventions
def cluster_approximation_hook(
    p: int, neuron_frequency: Mapping[int, int], *, site: hooks.Site | None = None
) -> HookFn:
    """A ``blocks.0.mlp.hook_post`` hook that replaces each listed neuron by its single-frequency
    degree-2 approximation: its mean plus its projection onto the eight 2D terms of its frequency.

    ``neuron_frequency`` maps neuron index -> frequency (e.g. the clustered rows of
    ``circuits.neuron_clusters``); other neurons are untouched. The eight terms hold both
    cos/sin(w_k(a+b)) and cos/sin(w_k(a-b)), so this is the same for op='add' and op='sub'.
    ``site``: default the transformer family's "neurons" site.
    """
    site = _site("neurons") if site is None else site
    groups: dict[int, list[int]] = {}
    for neuron, k in neuron_frequency.items():
        groups.setdefault(int(k), []).append(int(neuron))
    directions = {k: fourier.frequency_directions_2d(p, [k], "all") for k in groups}

    def approximate(last: Float[Tensor, "batch neuron"]) -> Tensor:
        out = last.clone()
        for k, neurons in groups.items():
            idx = torch.tensor(neurons, device=last.device)
            out[:, idx] = _ablate(last[:, idx], directions[k], "keep")
        return out

    def hook_fn(activation: Float[Tensor, "batch pos neuron"], hook: Any) -> Tensor:
        _check_batch(activation, p, "cluster approximation")
        return site.apply(activation, approximate)

    return hook_fn


def neuron_projection_hook(
    directions: Float[Tensor, "direction neuron"], onto: Literal["span", "null"] = "span", *,
    site: hooks.Site | None = None,
) -> HookFn:
    """A ``blocks.0.mlp.hook_post`` hook that projects each input's neuron-activation vector (at
    the ``=`` position) onto the span of ``directions``, or onto its orthogonal complement.

    With the 2K W_L directions u_k, v_k (``circuits.neuron_logit_fit``) this is the paper's
    "project the MLP output onto the W_L directions / their null space". Works on any batch.
    ``site``: default the transformer family's "neurons" site.
    """
    if onto not in ("span", "null"):
        raise ValueError(f"onto={onto!r} is not 'span' or 'null'; pass onto='span' or onto='null'")
    site = _site("neurons") if site is None else site

    def project(last: Float[Tensor, "batch neuron"]) -> Tensor:
        x = last.T  # [neuron, batch]: project along the neuron axis
        proj = fourier.project_onto(x, directions) if onto == "span" else fourier.remove_span(x, directions)
        return proj.T

    def hook_fn(activation: Float[Tensor, "batch pos neuron"], hook: Any) -> Tensor:
        if directions.shape[-1] != activation.shape[-1]:
            raise ValueError(
                f"directions are {directions.shape[-1]}-dimensional but the model has {activation.shape[-1]} neurons"
            )
        return site.apply(activation, project)

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


def section_4_4_interventions(sign: int = +1) -> tuple[str, ...]:
    """The §4.4 intervention names for a run of sign +1 (op='add': ``SECTION_4_4_INTERVENTIONS``)
    or -1 (op='sub': the same names with (a-b) for (a+b))."""
    if fourier.check_sign(sign) == 1:
        return SECTION_4_4_INTERVENTIONS
    return tuple(name.replace("(a+b)", "(a-b)") for name in SECTION_4_4_INTERVENTIONS)


def section_4_4_table(
    model: torch.nn.Module,
    key_freqs: Iterable[int],
    neuron_frequency: Mapping[int, int],
    wl_directions: Float[Tensor, "direction neuron"],
) -> pd.DataFrame:
    """The paper's §4.4 ablations on ``model``: one row per intervention of
    ``section_4_4_interventions(sign)`` (``mechgrok.reproduce.nanda2023`` has the paper's losses,
    for op='add').

    Valid for runs of op='add' (a+b) and op='sub' (a-b, named so in the rows), read from the
    run's task; any other operation raises ``ValueError``. ``neuron_frequency``: the clustered
    neurons and their frequencies; ``wl_directions``: the 2K u_k, v_k of the W_L fit. Both come
    from ``mechgrok.analysis.circuits``. Losses are on all p² inputs.
    """
    info, sign = _fourier_run(model, "section_4_4_table")
    p, family = info.task.p, info.config.family
    ks = fourier.check_frequencies(key_freqs, p)
    W_E = model.W_E.detach()
    guard = (hooks.EMBED, grid_order_guard(p, W_E))
    neurons = _site("neurons", family)
    names = list(section_4_4_interventions(sign))
    keys = dict(W_E=W_E, sign=sign, family=family)
    interventions: list[list[tuple[str, HookFn]]] = [
        [],
        [guard, (neurons.hook, cluster_approximation_hook(p, neuron_frequency, site=neurons))],
        frequency_hooks(p, ks, site="neurons", mode="keep", terms="sum", **keys),
        [(neurons.hook, neuron_projection_hook(wl_directions, "span", site=neurons))],
        [(neurons.hook, neuron_projection_hook(wl_directions, "null", site=neurons))],
        frequency_hooks(p, ks, site="logits", mode="keep", terms="all", **keys),
        frequency_hooks(p, ks, site="logits", mode="keep", terms="sum", **keys),
        frequency_hooks(p, ks, site="logits", mode="remove", terms="sum", **keys),
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
