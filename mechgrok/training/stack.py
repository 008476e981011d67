"""Many models of one shape trained at once: stacked weights, one batched step for them all.

A sweep trains hundreds of small models that differ only in seed, learning rate, weight decay
or train-set size. Training them one at a time leaves a CPU core mostly waiting on Python and
on tiny GEMMs; stacking them (every weight gets a leading ``model`` axis) turns many small
steps into a few batched ones. ``train_stack(cfgs, out_dirs)`` does that for every family
without an exact fast step (Pearce et al.'s MLPs, the circle, the sparse-parity MLP), and for
a family that declares a stacked step (``ModelFamily.stacked_step``: the transformer's
:class:`~mechgrok.models.stacked_fastpath.StackedFastPath`, many seeds at once on a GPU), and
writes each model into its own ordinary run folder, so ``mechgrok.load_run`` reads it like
any other run.

* **Stacks.** Configs with equal :func:`stack_key` (family, task, shapes, loss settings,
  schedule) train in one stack. Inside a stack the fields of ``PER_MODEL_FIELDS`` may differ:
  seed (weights and data), lr, weight_decay, betas, warm-up, decay kind, and the train / test
  sizes. A size is a mask, not a ragged batch: a stack's models are sorted by size, every
  model's rows are padded to the longest of its chunk, and the padding is masked out of the
  mean.
* **The step.** Hand-written batched matmuls with a derived backward for the families here
  (:class:`_Parity`; :class:`_Modular` for the modular MLPs and the circle), 2-8x faster on
  this project's CPUs than the generic step, :class:`_Generic`: ``vmap(grad_and_value)`` of a
  ``functional_call`` of the family's own model, which trains any other family and against
  which the tests pin the hand-written ones. A family's own ``stacked_step`` comes first
  (:func:`kernel_of`). The optimiser is AdamW written over the stacked
  tensors (:class:`StackedAdamW`), with per-model lr and decay, ``torch.optim.AdamW``'s formula.
* **Chunks.** A stack runs in chunks of models; how many models one batched step should hold
  depends on the width (past a point the activations fall out of cache and batching is slower
  than one model at a time). :func:`probe_chunk_size` times a few steps at a few chunk sizes
  on this machine and keeps the fastest, cached in-process; ``chunk_size=`` overrides it.
  A model's numbers do not depend on which models share its chunk, but may, by float32
  rounding, on the chunk's padded length and on whether it is alone in it, so the chunk size
  is recorded in the resume files and reused.
* **Runs.** Epoch e is the state after e steps, as in :mod:`mechgrok.training.loop`; the
  metrics rows, checkpoints and resume files are that trainer's, with the loss in the scale
  it is trained in (``loss_scale='per_output'`` logs CE / d_vocab_out). ``elapsed_s`` is the
  stack's wall time. Ctrl-C or SIGTERM finishes the step, writes every model's resume file
  and returns ``interrupted=True``; running again resumes bit-identically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.func import functional_call, grad_and_value, vmap

from mechgrok import registry, runs, speed
from mechgrok.config import Config
from mechgrok.scoring import loss_dtype as torch_loss_dtype
from mechgrok.tasks.base import Split
from mechgrok.tasks.data import run_data
from mechgrok.training.loop import TrainResult, _check_finite, _existing_run, _stop_on_signals
from mechgrok.training.device import resolve_device
from mechgrok.training.memory import check_fits
from mechgrok.training.optim import lr_at, trainable

__all__ = ["PER_MODEL_FIELDS", "StackResult", "StackedAdamW", "stack_key", "train_stack", "probe_chunk_size",
           "probe_times", "resolve_device", "kernel_of", "matmul_precision"]

# Fields that may differ between the models of one stack: each model gets its own value
# (per-model optimiser coefficients, its own data, its own mask).
PER_MODEL_FIELDS = frozenset({
    "seed", "lr", "weight_decay", "beta1", "beta2", "warmup_steps", "decay",
    "frac_train", "n_train", "n_test", "parity_bits",
})
ADAM_EPS = 1e-8  # torch.optim.AdamW's default, which make_optimizer keeps
# Metadata of a stacked run's resume file: the chunk size its stack trained with. A model's
# float32 sums depend on its chunk (the padded length orders them; a chunk of one model takes
# torch's mm/gemv path where larger chunks take bmm), so a resumed stack is chunked the same way
# again, and so padded the same way, to stay bit-identical.
CHUNK_KEY = "stack_chunk_size"


def stack_key(cfg: Config) -> tuple:
    """What must be equal for configs to train in one stack: every field but ``PER_MODEL_FIELDS``."""
    return tuple((f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name not in PER_MODEL_FIELDS)


@dataclass
class StackResult(TrainResult):
    """A :class:`~mechgrok.training.loop.TrainResult` plus how the model was stacked."""

    stack_size: int = 1  # models in the stack it trained in (0: skipped, already finished)
    chunk_size: int = 1  # models per batched step (0: not trained by this call)


# --------------------------------------------------------------------------- the optimiser
class StackedAdamW:
    """AdamW over stacked weights ``[model, ...]``, each model with its own lr, betas and decay.

    The update is ``torch.optim.AdamW``'s (bias-corrected, eps 1e-8)::

        decay "l2":  w <- w (1 - lr wd)                       (decoupled weight decay)
        decay "l1":  g <- g + wd sign(w)                      (no decoupled decay)
        m <- lerp(m, g, 1 - beta1);  v <- beta2 v + (1 - beta2) g²
        w <- w - lr / (1 - beta1^t) · m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Per-model coefficients are computed in float64 and cast to the weights' dtype, as
    torch casts its Python-float coefficients. ``step`` counts the updates (all models of a
    stack have taken the same number).
    """

    def __init__(self, params: dict[str, Tensor], cfgs: Sequence[Config], *, step: int = 0,
                 exp_avg: dict[str, Tensor] | None = None, exp_avg_sq: dict[str, Tensor] | None = None):
        self.params, self.cfgs, self.step = params, list(cfgs), step
        self.exp_avg = exp_avg if exp_avg is not None else {k: torch.zeros_like(v) for k, v in params.items()}
        self.exp_avg_sq = exp_avg_sq if exp_avg_sq is not None else {k: torch.zeros_like(v) for k, v in params.items()}
        host = dict(dtype=torch.float64)
        self._beta1 = torch.tensor([c.beta1 for c in cfgs], **host)
        self._beta2 = torch.tensor([c.beta2 for c in cfgs], **host)
        self._wd_l2 = torch.tensor([c.weight_decay if c.decay == "l2" else 0.0 for c in cfgs], **host)
        wd_l1 = [c.weight_decay if c.decay == "l1" else 0.0 for c in cfgs]
        some = next(iter(params.values()))
        self._wd_l1 = torch.tensor(wd_l1, **host).to(device=some.device, dtype=some.dtype) if any(wd_l1) else None
        self._one_minus_beta1 = (1 - self._beta1).to(device=some.device, dtype=some.dtype)
        self._one_minus_beta2 = (1 - self._beta2).to(device=some.device, dtype=some.dtype)
        self._beta2_w = self._beta2.to(device=some.device, dtype=some.dtype)

    def update(self, grads: dict[str, Tensor], epoch: int) -> None:
        """One AdamW step with the learning rate of step ``epoch`` (:func:`mechgrok.training.optim.lr_at`)."""
        self.step += 1
        t = self.step
        lr = torch.tensor([lr_at(c, epoch) for c in self.cfgs], dtype=torch.float64)
        bias1 = 1 - self._beta1**t
        bias2_sqrt = (1 - self._beta2**t).sqrt()
        some = next(iter(self.params.values()))
        to = dict(device=some.device, dtype=some.dtype)
        keep = (1 - lr * self._wd_l2).to(**to)
        neg_step_size = (-lr / bias1).to(**to)
        bias2_sqrt = bias2_sqrt.to(**to)
        for name, w in self.params.items():
            view = (-1,) + (1,) * (w.ndim - 1)  # [model, 1, ...]: broadcasts a per-model coefficient
            g = grads[name]
            if self._wd_l1 is not None:
                g = g + self._wd_l1.view(view) * torch.sign(w)
            w.mul_(keep.view(view))
            m, v = self.exp_avg[name], self.exp_avg_sq[name]
            m.lerp_(g, self._one_minus_beta1.view(view))
            v.mul_(self._beta2_w.view(view)).addcmul_(g * self._one_minus_beta2.view(view), g)
            denom = (v.sqrt() / bias2_sqrt.view(view)).add_(ADAM_EPS)
            w.addcdiv_(m * neg_step_size.view(view), denom)

    def model_state(self, i: int) -> dict[str, Tensor]:
        """Model ``i``'s state keyed like :func:`mechgrok.training.optim.optimizer_tensors`
        (``<param>.exp_avg``, ``.exp_avg_sq``, ``.step``); empty before the first step, as torch's."""
        if self.step == 0:
            return {}
        out = {}
        for name in self.params:
            out[f"{name}.exp_avg"] = self.exp_avg[name][i].detach().cpu().clone()
            out[f"{name}.exp_avg_sq"] = self.exp_avg_sq[name][i].detach().cpu().clone()
            out[f"{name}.step"] = torch.tensor(float(self.step), dtype=torch.float32)  # torch keeps step as float32
        return out


# --------------------------------------------------------------------------- one model of a stack
@dataclass
class _Member:
    index: int  # position in train_stack's cfgs
    cfg: Config
    out_dir: Path
    model: torch.nn.Module  # on the CPU; its slice of the stack is copied in to write a checkpoint
    split: Split
    start: int
    rows: list[dict]
    elapsed0: float
    resumed_from: int | None
    optim: dict[str, Tensor] = field(default_factory=dict)
    chunk_size: int | None = None  # models per batched step of its stack, if resumed


def _check_folder(cfg: Config, out_dir: Path) -> runs.CheckpointFile | None:
    """The resume checkpoint of ``out_dir`` (None: a new run), or a ``ValueError`` if it cannot
    go on to ``cfg``; reads only, so every folder is checked before any is written."""
    resume = _existing_run(out_dir, cfg)
    if resume is not None and resume.epoch > cfg.epochs:
        raise ValueError(
            f"{out_dir} is already trained to epoch {resume.epoch}, past epochs={cfg.epochs}; pass "
            f"epochs >= {resume.epoch} to go on, or read an earlier epoch with load_run({str(out_dir)!r}, epoch=...)"
        )
    return resume


def _prepare(index: int, cfg: Config, out_dir: Path, resume: runs.CheckpointFile | None,
             on_resume) -> _Member | StackResult:
    """A member to train, or the result of a folder already trained to ``cfg.epochs`` (left untouched)."""
    family = registry.family(cfg.family)
    if resume is None:
        split = run_data(cfg).split
        model = family.build(cfg)
        runs.attach(model, cfg, split)
        try:
            runs.write_config(out_dir, cfg)
            runs.write_split(out_dir, split)
        except OSError as err:
            raise runs.write_error(err, out_dir, None) from err
        return _Member(index, cfg, out_dir, model, split, 0, [], 0.0, None)
    ckpt = resume
    split = ckpt.split
    model = runs.model_from_state(cfg, ckpt.model_state, split)
    start = ckpt.epoch
    metrics = runs.read_metrics(out_dir)
    if start == cfg.epochs and metrics is not None and bool((metrics["epoch"] == start).any()):
        # finished already: hand back what is on disk, rewrite nothing
        return StackResult(model, cfg, split, metrics, start, False, start, float(metrics.elapsed_s.iloc[-1]), out_dir,
                           threads=torch.get_num_threads(), stack_size=0, chunk_size=0)
    rows = [] if metrics is None else metrics[metrics["epoch"] < start].to_dict("records")
    if cfg != runs.read_config(out_dir):  # only RESUMABLE_CHANGES can differ here
        try:
            runs.write_config(out_dir, cfg)
        except OSError as err:
            raise runs.write_error(err, out_dir, start) from err
    chunk = int(ckpt.metadata[CHUNK_KEY]) if CHUNK_KEY in ckpt.metadata else None
    if on_resume is not None:
        on_resume(out_dir, start)
    return _Member(index, cfg, out_dir, model, split, start, rows, float(ckpt.metadata.get("elapsed_s", "0")), start,
                   dict(ckpt.optimizer_state), chunk)


# --------------------------------------------------------------------------- stacked data and loss
@dataclass
class _Rows:
    """One set of rows (train or test) of every model of a chunk, padded to the longest and masked."""

    inputs: Tensor  # what the step reads: the tokens [model, batch, pos], or a kernel's own form of them
    labels: Int[Tensor, "model batch"]
    mask: Float[Tensor, "model batch"]  # 1 for a real row, 0 for padding; in the loss dtype
    count: Float[Tensor, "model"]  # real rows per model
    n: list[int]  # the same, as ints, for accuracies
    cache: dict[str, Tensor] = field(default_factory=dict)  # a kernel's per-rows constants


def _pad_rows(sets: list[tuple[Tensor, Tensor]], length: int, dtype: torch.dtype, device: torch.device,
              inputs: Callable[[Tensor], Tensor]) -> _Rows:
    tokens, labels, masks = [], [], []
    for x, y in sets:
        pad = length - len(x)
        if pad < 0:
            raise ValueError(f"a model has {len(x)} rows but its stack pads to {length}; this is a bug in the stacked trainer")
        # padding repeats the model's first row: real tokens, so every logit stays finite, and masked out
        tokens.append(torch.cat([x, x[:1].expand(pad, *x.shape[1:])]))
        labels.append(torch.cat([y, y[:1].expand(pad)]))
        masks.append(torch.cat([torch.ones(len(x), dtype=dtype), torch.zeros(pad, dtype=dtype)]))
    n = [len(x) for x, _ in sets]
    return _Rows(inputs(torch.stack(tokens).to(device)), torch.stack(labels).to(device), torch.stack(masks).to(device),
                 torch.tensor(n, dtype=dtype, device=device), n)


class _Generic:
    """Any family, through its own forward: ``vmap(grad_and_value(loss))`` of a ``functional_call``."""

    def __init__(self, base: torch.nn.Module, dtype: torch.dtype, scale: int):
        def loss(params, buffers, tokens, labels, mask, count):
            logits = functional_call(base, (params, buffers), (tokens,))[:, -1]  # [batch, d_vocab_out]
            return _masked_loss(logits, labels, mask, count, dtype, scale)

        self._grad = vmap(grad_and_value(loss, has_aux=True))
        self._loss = vmap(loss)

    def inputs(self, tokens: Int[Tensor, "model batch pos"]) -> Tensor:
        return tokens

    def loss_and_grad(self, params, buffers, rows: _Rows) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        grads, (loss, correct) = self._grad(params, buffers, rows.inputs, rows.labels, rows.mask, rows.count)
        return grads, loss, correct

    def loss(self, params, buffers, rows: _Rows) -> tuple[Tensor, Tensor]:
        return self._loss(params, buffers, rows.inputs, rows.labels, rows.mask, rows.count)


def _masked_loss(logits: Float[Tensor, "batch d_vocab_out"], labels: Int[Tensor, "batch"], mask: Float[Tensor, "batch"],
                 count: Tensor, dtype: torch.dtype, scale: int) -> tuple[Tensor, Tensor]:
    """One model's (loss, correct) on its rows: mechgrok.scoring.cross_entropy's semantics (the logits
    cast to ``dtype`` first), the mean over the real rows only, divided by ``scale``."""
    logp = torch.log_softmax(logits.to(dtype), dim=-1)
    ce = -logp.gather(-1, labels[..., None])[..., 0]
    value = (ce * mask).sum(-1) / count
    if scale != 1:
        value = value / scale
    correct = ((logits.argmax(-1) == labels).to(dtype) * mask).sum(-1)
    return value, correct


class _Parity:
    """The sparse-parity MLP (mechgrok.models.parity) by hand: batched matmuls and a derived backward.

    Forward, per model: ``post = relu([bits, 1] W_in)``, ``z = post W_out``, logits ``[0, z]``.
    With dz = ∂loss/∂z = (softmax(logits)[1] - label) · mask / count (/ scale), the backward is
    ``∂W_out = postᵀ dz`` and, since ∂pre = dz W_outᵀ ⊙ [post > 0] has a per-row factor dz,
    ``∂W_in = ((x ⊙ dz)ᵀ [post > 0]) ⊙ W_outᵀ``: one pass over the [batch, neuron] activations
    fewer than autograd's. The inputs [bits, 1] are made once, in float32, not every step.
    ``tests/test_stack.py`` pins it to :class:`_Generic` (the family's own forward and autograd).
    """

    def __init__(self, base: torch.nn.Module, dtype: torch.dtype, scale: int):
        self.dtype, self.scale = dtype, scale
        self.weight_dtype = base.mlp.W_in.dtype
        self._workspace: dict[tuple, Tensor] = {}

    def _activations(self, x: Tensor, w_in: Tensor) -> Tensor:
        """x W_in into a buffer kept between steps: a fresh [model, batch, neuron] tensor each step
        would be mmap'd and page-faulted in again once it is past malloc's mmap threshold."""
        shape = (x.shape[0], x.shape[1], w_in.shape[2])
        key = (shape, x.device)
        if key not in self._workspace:
            self._workspace[key] = torch.empty(shape, dtype=x.dtype, device=x.device)
        return torch.bmm(x, w_in, out=self._workspace[key])

    def inputs(self, tokens: Int[Tensor, "model batch pos"]) -> Float[Tensor, "model batch bit"]:
        ones = torch.ones(*tokens.shape[:2], 1, dtype=self.weight_dtype, device=tokens.device)
        return torch.cat([tokens.to(self.weight_dtype), ones], dim=-1)

    def _forward(self, params, x):
        post = self._activations(x, params["mlp.W_in"]).relu_()  # [model, batch, neuron]
        w_out = params["mlp.W_out"]
        # z = post W_out is a matrix-vector product per model. torch's bmm with one output column
        # is 2-8x slower than the alternatives on this CPU; one output row (W_outᵀ postᵀ) is the
        # fastest while post is narrow, mv one model at a time once it is wide (measured, 16-258)
        if post.shape[-1] <= 32:
            z = torch.bmm(w_out.transpose(1, 2), post.transpose(1, 2)).transpose(1, 2)  # [model, batch, 1]
        else:
            z = torch.stack([torch.mv(post[i], w_out[i, :, 0]) for i in range(len(post))])[..., None]
        return post, z

    def _loss(self, z, rows: _Rows):
        """(log p(label 1), loss, correct): torch's log_softmax over the logits [0, z], written out
        for two classes (torch's own kernel is slow on a class axis of 2): with m = max(0, z),
        log p = logit - m - log(exp(-m) + exp(z - m)), in the loss dtype."""
        if "is_one" not in rows.cache:  # the labels as the step needs them, made once
            rows.cache["is_one"] = rows.labels == 1
            rows.cache["label"] = rows.labels.to(self.dtype)
        z = z[..., 0].to(self.dtype)  # [model, batch]
        m = z.clamp_min(0)
        log_sum = torch.log(torch.exp(-m) + torch.exp(z - m))
        logp1 = (z - m) - log_sum
        ce = -torch.where(rows.cache["is_one"], logp1, (-m) - log_sum)
        loss = (ce * rows.mask).sum(-1) / rows.count
        if self.scale != 1:
            loss = loss / self.scale
        correct = (((z > 0) == rows.cache["is_one"]).to(self.dtype) * rows.mask).sum(-1)  # argmax [0, z]: ties pick 0
        return logp1, loss, correct

    def loss_and_grad(self, params, buffers, rows: _Rows) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        x = rows.inputs
        post, z = self._forward(params, x)
        logp1, loss, correct = self._loss(z, rows)
        if "weight" not in rows.cache:  # ∂loss/∂ce per row: mask / count (/ scale)
            weight = rows.mask / rows.count[:, None]
            rows.cache["weight"] = weight / self.scale if self.scale != 1 else weight
        dz = ((logp1.exp() - rows.cache["label"]) * rows.cache["weight"]).to(z.dtype)[..., None]  # [model, batch, 1]
        grad_out = torch.bmm(dz.transpose(1, 2), post).transpose(1, 2)  # [model, neuron, 1]: one output row is fast
        active = post.sign_()  # [post > 0], in place: post is not needed again
        # x and [post > 0] are 0 or 1, so x dz [post > 0] is exact in either order: scale the
        # narrower of the two by dz (in place where that is the activations)
        if active.shape[-1] <= x.shape[-1]:
            grad_in = torch.bmm(x.transpose(1, 2), active.mul_(dz))
        else:
            grad_in = torch.bmm((x * dz).transpose(1, 2), active)
        grad_in *= params["mlp.W_out"].transpose(1, 2)
        return {"mlp.W_in": grad_in, "mlp.W_out": grad_out}, loss, correct

    def loss(self, params, buffers, rows: _Rows) -> tuple[Tensor, Tensor]:
        _, z = self._forward(params, rows.inputs)
        _, loss, correct = self._loss(z, rows)
        return loss, correct


class _Modular:
    """Pearce et al.'s a+b mod p MLPs and the circle (mechgrok.models.mlp, .circle) by hand.

    The input side is a per-token table: ``E[a] W_in + E[b] W_in = T[a] + T[b]`` with
    T = E W_in [p, neuron] (or W_input itself), so the [batch, d_model] embedding rows are
    never formed; the output side is W_L = W_out Eᵀ [neuron, c] (or W_output). Backward by
    hand: ∂logits = (softmax - onehot) · mask / count (/ scale), ∂W_L = postᵀ ∂logits,
    ∂pre = ∂logits W_Lᵀ ⊙ act'(pre), ∂T = the sum of ∂pre over the rows of each token
    (``index_add_``, deterministic on the CPU), then through T = E W_in and W_L = W_out Eᵀ
    to E (both sides, tied), W_in and W_out. The circle's E is a buffer and gets no gradient.
    The 2-layer MLP (``mlp2``) adds biases: ``pre += b_in``, ``logits += b_out``, so ∂b_in and
    ∂b_out are ∂pre and ∂logits summed over the rows.
    ``tests/test_stack.py`` and ``tests/test_mlp2.py`` pin every family to :class:`_Generic`
    (its own forward and autograd).
    """

    def __init__(self, base: torch.nn.Module, dtype: torch.dtype, scale: int):
        self.dtype, self.scale = dtype, scale
        self.p = base.p
        self.act_fn = getattr(base, "act_fn", "relu")

    def inputs(self, tokens: Int[Tensor, "model batch pos"]) -> Int[Tensor, "model batch 2"]:
        # the rows of a and b in the chunk's stacked tables [model * p, neuron]: token + model * p
        offset = torch.arange(tokens.shape[0], device=tokens.device)[:, None, None] * self.p
        return tokens[..., :2] + offset

    def _tables(self, params, buffers):
        E = params.get("embed.W_E", buffers.get("embed.W_E"))
        table = params["mlp.W_input"] if "mlp.W_input" in params else torch.bmm(E, params["mlp.W_in"])  # [model, p, neuron]
        W_L = params["mlp.W_output"] if "mlp.W_output" in params else torch.bmm(params["mlp.W_out"], E.transpose(1, 2))
        return E, table, W_L  # W_L: [model, neuron, c]

    def _forward(self, table, W_L, rows: _Rows, params):
        n, T = rows.inputs.shape[:2]
        flat = table.reshape(-1, table.shape[-1])  # [model * p, neuron]
        pre = (flat.index_select(0, rows.inputs[..., 0].reshape(-1))
               + flat.index_select(0, rows.inputs[..., 1].reshape(-1))).view(n, T, -1)  # [model, batch, neuron]
        if "mlp.b_in" in params:
            pre = pre + params["mlp.b_in"][:, None, :]
        post = torch.relu(pre) if self.act_fn == "relu" else pre.square()
        if "mlp.b_out" in params:
            return pre, post, torch.baddbmm(params["mlp.b_out"][:, None, :], post, W_L)
        return pre, post, torch.bmm(post, W_L)  # logits [model, batch, c]

    def loss_and_grad(self, params, buffers, rows: _Rows) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        E, table, W_L = self._tables(params, buffers)
        pre, post, logits = self._forward(table, W_L, rows, params)
        logp = torch.log_softmax(logits.to(self.dtype), dim=-1)
        loss, correct = self._score(logits, logp, rows)
        if "weight" not in rows.cache:  # ∂loss/∂ce per row: mask / count (/ scale)
            weight = rows.mask / rows.count[:, None]
            rows.cache["weight"] = weight / self.scale if self.scale != 1 else weight
        d_logits = logp.exp()  # softmax - onehot, weighted per row
        d_logits.scatter_add_(-1, rows.labels[..., None], torch.full_like(d_logits[..., :1], -1.0))
        d_logits = (d_logits * rows.cache["weight"][..., None]).to(logits.dtype)  # [model, batch, c]
        grad_W_L = torch.bmm(post.transpose(1, 2), d_logits)  # [model, neuron, c]
        d_pre = torch.bmm(d_logits, W_L.transpose(1, 2))  # [model, batch, neuron]
        if self.act_fn == "relu":
            d_pre.mul_(post.sign_())  # [post > 0], 0 or 1: exact
        else:
            d_pre.mul_(pre).mul_(2)
        grads: dict[str, Tensor] = {}
        if "mlp.b_in" in params:
            grads["mlp.b_in"] = d_pre.sum(1)
        if "mlp.b_out" in params:
            grads["mlp.b_out"] = d_logits.sum(1)
        n, T, width = d_pre.shape
        grad_table = torch.zeros(n * self.p, width, dtype=d_pre.dtype, device=d_pre.device)
        flat = d_pre.reshape(n * T, width)
        grad_table.index_add_(0, rows.inputs[..., 0].reshape(-1), flat)
        grad_table.index_add_(0, rows.inputs[..., 1].reshape(-1), flat)
        grad_table = grad_table.view(n, self.p, width)  # [model, p, neuron]
        grad_E = None
        if "mlp.W_input" in params:
            grads["mlp.W_input"] = grad_table
        else:
            grads["mlp.W_in"] = torch.bmm(E.transpose(1, 2), grad_table)
            if "embed.W_E" in params:
                grad_E = torch.bmm(grad_table, params["mlp.W_in"].transpose(1, 2))
        if "mlp.W_output" in params:
            grads["mlp.W_output"] = grad_W_L
        else:
            grads["mlp.W_out"] = torch.bmm(grad_W_L, E)
            if "embed.W_E" in params:
                out_side = torch.bmm(grad_W_L.transpose(1, 2), params["mlp.W_out"])
                grad_E = out_side if grad_E is None else grad_E + out_side
        if grad_E is not None:
            grads["embed.W_E"] = grad_E
        return grads, loss, correct

    def _score(self, logits, logp, rows: _Rows) -> tuple[Tensor, Tensor]:
        ce = -logp.gather(-1, rows.labels[..., None])[..., 0]
        loss = (ce * rows.mask).sum(-1) / rows.count
        if self.scale != 1:
            loss = loss / self.scale
        correct = ((logits.argmax(-1) == rows.labels).to(self.dtype) * rows.mask).sum(-1)
        return loss, correct

    def loss(self, params, buffers, rows: _Rows) -> tuple[Tensor, Tensor]:
        _, table, W_L = self._tables(params, buffers)
        _, _, logits = self._forward(table, W_L, rows, params)
        return self._score(logits, torch.log_softmax(logits.to(self.dtype), dim=-1), rows)


# family -> a hand-written step, used where it is faster than the generic one (docs/training.md)
KERNELS: dict[str, type] = {
    "parity_mlp": _Parity,
    **{name: _Modular for name in ("mlp", "mlp_unfactored", "mlp_collapsed_in", "mlp_collapsed_out", "circle", "mlp2")},
}


def kernel_of(family: str) -> type:
    """The step that trains ``family`` in a stack: its own ``stacked_step`` (the transformer's
    :class:`~mechgrok.models.stacked_fastpath.StackedFastPath`), else a hand-written one here
    (``KERNELS``), else :class:`_Generic`."""
    return registry.family(family).load_stacked_step() or KERNELS.get(family, _Generic)


class _Chunk:
    """Models trained by one batched step: their stacked weights, optimiser state and rows."""

    def __init__(self, members: list[_Member], device: torch.device, kernel: type | None = None,
                 rows_padded: tuple[int, int] | None = None):
        self.members = members
        cfg = members[0].cfg
        dtype = torch_loss_dtype(cfg.loss_dtype)
        names = [name for name, _ in trainable(members[0].model)]
        self.params: dict[str, Tensor] = {
            name: torch.stack([m.model.get_parameter(name).detach() for m in members]).to(device).contiguous()
            for name in names
        }
        # buffers and frozen weights (the circle's embedding) ride along, never updated
        frozen = {n: t for n, t in members[0].model.named_buffers()}
        frozen.update({n: p for n, p in members[0].model.named_parameters() if not p.requires_grad})
        self.buffers: dict[str, Tensor] = {
            name: torch.stack([_tensor(m.model, name).detach() for m in members]).to(device) for name in frozen
        }
        start = members[0].start
        exp_avg = exp_avg_sq = None
        if start > 0:
            lacking = [str(m.out_dir) for m in members if any(f"{n}.exp_avg" not in m.optim for n in names)]
            if lacking:
                raise ValueError(f"the resume files of {lacking} hold no optimizer state for {names}; they cannot be "
                                 "resumed exactly. Train them again into new folders")
            exp_avg = {n: torch.stack([m.optim[f"{n}.exp_avg"] for m in members]).to(device) for n in names}
            exp_avg_sq = {n: torch.stack([m.optim[f"{n}.exp_avg_sq"] for m in members]).to(device) for n in names}
            steps = {int(m.optim[f"{n}.step"]) for m in members for n in names}
            if steps != {start}:
                raise ValueError(f"resume files of epoch {start} hold optimizer steps {sorted(steps)}; they are damaged")
        self.optimizer = StackedAdamW(self.params, [m.cfg for m in members], step=start, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
        scale = cfg.d_vocab_out if cfg.loss_scale == "per_output" else 1
        kernel = kernel or kernel_of(cfg.family)
        self.kernel = kernel(members[0].model, dtype, scale)
        data = [run_data(m.cfg) for m in members]
        # every model's rows padded to the chunk's longest (members of a stack are sorted by size,
        # so a chunk holds models of like size and little is padded)
        if rows_padded is None:
            rows_padded = (max(len(m.split.train) for m in members), max(len(m.split.test) for m in members))
        self.train = _pad_rows([(d.tokens[m.split.train], d.labels[m.split.train]) for d, m in zip(data, members)],
                               rows_padded[0], dtype, device, self.kernel.inputs)
        self.test = _pad_rows([(d.tokens[m.split.test], d.labels[m.split.test]) for d, m in zip(data, members)],
                              rows_padded[1], dtype, device, self.kernel.inputs)

    def loss_and_grad(self) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        return self.kernel.loss_and_grad(self.params, self.buffers, self.train)

    @torch.no_grad()
    def loss(self, rows: _Rows) -> tuple[Tensor, Tensor]:
        return self.kernel.loss(self.params, self.buffers, rows)

    def write_back(self) -> None:
        """Copy each model's slice of the stack into its own (CPU) model, for a checkpoint."""
        with torch.no_grad():
            for i, m in enumerate(self.members):
                for name, stacked in self.params.items():
                    m.model.get_parameter(name).copy_(stacked[i])


def _tensor(model: torch.nn.Module, name: str) -> Tensor:
    try:
        return model.get_buffer(name)
    except AttributeError:
        return model.get_parameter(name)


# --------------------------------------------------------------------------- chunk size
_CHUNK_CACHE: dict[tuple, int] = {}
_CHUNK_TIMES: dict[tuple, dict[int, float]] = {}  # the probe's seconds per model-step by chunk size


def _candidates(n: int) -> list[int]:
    sizes, c = [], 1
    while c < n:
        sizes.append(c)
        c *= 2
    return sizes + [n]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe_chunk_size(cfgs: Sequence[Config], *, device: str | torch.device = "cpu", steps: int = 4) -> int:
    """The number of models per batched step that trains ``cfgs`` (one stack) fastest here.

    Times ``steps`` steps (after one untimed) at chunk sizes 1, 2, 4, ... up to len(cfgs) on
    fresh models of the configs with the most rows (the chunks whose activations are the
    likeliest to fall out of cache), stopping once two sizes in a row are no faster per
    model-step than the best (the activations have fallen out of cache: it only gets worse, and
    costs memory); then it times every size tried once more, in reverse order, and keeps the one
    with the least time per model-step. Each size counts its fastest step, so a moment's
    interference from another job does not count against it. The answer is cached in-process
    per stack key, train / test sizes, device and thread count; :func:`probe_times` gives what
    was measured. Nothing of the probe touches a run.
    """
    dev = resolve_device(device)
    cfgs = list(cfgs)
    if len({stack_key(c) for c in cfgs}) > 1:
        raise ValueError("probe_chunk_size takes the configs of one stack (equal stack_key); group them first")
    if len(cfgs) == 1:
        return 1
    sizes = [_sizes(c) for c in cfgs]
    key = (stack_key(cfgs[0]), tuple(sorted(sizes)), str(dev), torch.get_num_threads())
    cfgs = [c for _, c in sorted(zip(sizes, cfgs), key=lambda pair: pair[0], reverse=True)]  # largest first
    if key in _CHUNK_CACHE:
        return _CHUNK_CACHE[key]
    family = registry.family(cfgs[0].family)
    chunks: dict[int, _Chunk] = {}
    best: dict[int, float] = {}  # chunk size -> fastest seconds per model-step seen
    for size in _candidates(len(cfgs)):
        members = [_Member(i, cfg, Path("."), family.build(cfg), run_data(cfg).split, 0, [], 0.0, None)
                   for i, cfg in enumerate(cfgs[:size])]
        chunks[size] = _Chunk(members, dev)
        best[size] = _time_steps(chunks[size], steps, dev) / size
        fastest = min(best, key=best.get)
        if size >= 4 * fastest:
            break
    for size in reversed(list(chunks)):  # a second look, so a slow moment on the machine is not decisive
        best[size] = min(best[size], _time_steps(chunks[size], steps, dev) / size)
    choice = min(best, key=best.get)
    _CHUNK_CACHE[key] = choice
    _CHUNK_TIMES[key] = best
    return choice


def probe_times(cfgs: Sequence[Config], *, device: str | torch.device = "cpu") -> dict[int, float]:
    """What :func:`probe_chunk_size` measured for ``cfgs``: seconds per model-step by chunk size
    (empty if it has not probed them in this process, or needed not: a stack of one)."""
    cfgs = list(cfgs)
    key = (stack_key(cfgs[0]), tuple(sorted(_sizes(c) for c in cfgs)), str(resolve_device(device)), torch.get_num_threads())
    return dict(_CHUNK_TIMES.get(key, {}))


def _time_steps(chunk: _Chunk, steps: int, device: torch.device) -> float:
    """The fastest of ``steps`` timed training steps of ``chunk`` (after an untimed one), in seconds."""
    times = []
    for step in range(steps + 1):
        _sync(device)
        t0 = time.perf_counter()
        grads, _, _ = chunk.loss_and_grad()
        chunk.optimizer.update(grads, chunk.optimizer.step)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def _sizes(cfg: Config) -> tuple[int, int]:
    """(train rows, test rows) of a run of ``cfg``."""
    split = run_data(cfg).split
    return len(split.train), len(split.test)


# --------------------------------------------------------------------------- the trainer
@contextmanager
def matmul_precision(device: torch.device, tune: bool) -> Iterator[None]:
    """CPU: mechgrok.speed's oneDNN GEMMs (kept only where they keep float32 accuracy). CUDA:
    TF32 off, so a float32 run is float32 on every device."""
    if device.type != "cuda":
        with speed.fast_float32_matmul(tune):
            yield
        return
    previous = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous[:2]
        torch.set_float32_matmul_precision(previous[2])


def train_stack(
    cfgs: Sequence[Config],
    out_dirs: Sequence[str | Path],
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    progress: bool = False,
    chunk_size: int | None = None,
    on_eval: Callable[[dict], None] | None = None,
    on_resume: Callable[[Path, int], None] | None = None,
    tune_process: bool = True,
) -> list[StackResult]:
    """Train ``cfgs[i]`` into the run folder ``out_dirs[i]``, many models per batched step.

    Configs are grouped into stacks by :func:`stack_key` and by the epoch their folder resumes
    from; a folder already trained to its ``cfg.epochs`` is skipped (nothing is rewritten) and
    a folder with a resume file resumes from it. ``device`` is ``"cpu"`` or ``"cuda"``;
    ``threads`` and ``tune_process`` are :func:`mechgrok.train`'s. ``chunk_size`` fixes the
    models per batched step (default: :func:`probe_chunk_size`). ``on_eval`` gets every metrics
    row, with ``run_dir`` added; ``on_resume(run_dir, epoch)`` is called for each resumed folder.
    ``progress`` shows a tqdm bar per stack. Returns one :class:`StackResult` per config, in
    order; on SIGINT/SIGTERM every model's resume file is written and each result that did not
    finish has ``interrupted=True``.
    """
    cfgs, out_dirs = list(cfgs), [Path(d) for d in out_dirs]
    if len(cfgs) != len(out_dirs):
        raise ValueError(f"got {len(cfgs)} configs but {len(out_dirs)} out_dirs; pass one run folder per config")
    seen: dict[Path, int] = {}
    for i, d in enumerate(out_dirs):
        where = d.resolve()
        if where in seen:
            raise ValueError(f"out_dirs[{seen[where]}] and out_dirs[{i}] are the same folder {d}; pass one folder per config")
        seen[where] = i
    for cfg in cfgs:
        if not isinstance(cfg, Config):
            raise ValueError(f"cfgs must be mechgrok Configs, not {type(cfg).__name__}")
        if not registry.family(cfg.family).stackable:
            raise ValueError(
                f"family={cfg.family!r} trains with the {registry.family(cfg.family).training} trainer and declares no "
                "stacked step; train it with mechgrok.train(cfg, out_dir), not the stacked trainer"
            )
        if cfg.batch_size != 0:
            raise ValueError(
                f"batch_size={cfg.batch_size}: the stacked trainer steps on the whole train set of every model "
                f"(family={cfg.family!r}); pass batch_size=0 (minibatches exist for the transformer and the sequence tasks)"
            )
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size={chunk_size!r} must be an integer >= 1, or None to probe the fastest")
    dev = resolve_device(device)
    check_fits(cfgs)
    for cfg, out_dir in zip(cfgs, out_dirs):  # every folder is checked before any is created or written
        if out_dir.exists():
            _check_folder(cfg, out_dir)
    with contextlib.ExitStack() as locks, speed.torch_threads(threads) as n_threads, \
            speed.tuned_malloc(tune_process and dev.type == "cpu"), matmul_precision(dev, tune_process), \
            speed.flushed_denormals(tune_process and dev.type == "cpu"):
        for out_dir in out_dirs:  # every folder is this call's alone until it returns (checked again, held)
            locks.enter_context(runs.lock_run_folder(out_dir))
            runs.clear_unfinished_writes(out_dir)
        results: list[StackResult | None] = [None] * len(cfgs)
        groups: dict[tuple, list[_Member]] = {}
        resumes = [_check_folder(cfg, out_dir) for cfg, out_dir in zip(cfgs, out_dirs)]
        for i, (cfg, out_dir) in enumerate(zip(cfgs, out_dirs)):
            prepared = _prepare(i, cfg, out_dir, resumes[i], on_resume)
            if isinstance(prepared, StackResult):
                results[i] = prepared
            else:
                groups.setdefault((stack_key(cfg), prepared.start, prepared.chunk_size), []).append(prepared)
        with _stop_on_signals() as stop:
            for members in groups.values():
                for m, result in _train_group(members, dev, chunk_size, progress, on_eval, stop):
                    result.threads = n_threads
                    results[m.index] = result
    return results  # type: ignore[return-value]


def _train_group(members: list[_Member], device: torch.device, chunk_size: int | None, progress: bool,
                 on_eval: Callable[[dict], None] | None, stop) -> list[tuple[_Member, StackResult]]:
    """Train one stack (equal stack_key and start epoch) to its epochs, chunk after chunk within each step."""
    cfg = members[0].cfg
    start = members[0].start
    if stop.requested:  # an earlier stack was interrupted: leave this one as it is on disk
        return [(m, _result(m, start, True, m.elapsed0, len(members), 0)) for m in members]
    # like sizes share a chunk (less padding); the order is a function of the configs, so a
    # resumed stack is chunked as it was
    members = sorted(members, key=lambda m: (len(m.split.train), len(m.split.test), m.index))
    size = chunk_size or members[0].chunk_size
    if size is None:
        size = probe_chunk_size([m.cfg for m in members], device=device)
    size = min(size, len(members))
    chunks = [_Chunk(group, device) for group in _split_chunks(members, size)]

    on_disk = {id(m): m.resumed_from for m in members}  # each folder's resume epoch on disk (None: none yet)

    def save(epoch: int, elapsed: float, weights: bool) -> None:
        extra = {"elapsed_s": "", CHUNK_KEY: str(size)}
        for chunk in chunks:
            chunk.write_back()
        for chunk in chunks:  # every model is checked before any folder is written
            for m in chunk.members:
                _check_finite(m.model, epoch, m.out_dir, on_disk[id(m)])
        for chunk in chunks:
            for i, m in enumerate(chunk.members):
                extra["elapsed_s"] = repr(m.elapsed0 + elapsed)
                try:  # the resume file last (mechgrok.training.loop: any prefix of the writes resumes)
                    if weights:
                        runs.save_checkpoint_once(runs.checkpoint_path(m.out_dir, epoch), m.model, m.cfg, m.split, epoch)
                    runs.write_metrics(m.out_dir, m.rows)
                    runs.save_checkpoint(m.out_dir / runs.RESUME_FILE, m.model, m.cfg, m.split, epoch,
                                         optimizer_state=chunk.optimizer.model_state(i), extra=dict(extra))
                except OSError as err:
                    raise runs.write_error(err, m.out_dir, on_disk[id(m)]) from err
                on_disk[id(m)] = epoch

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, initial=start, unit="epoch", dynamic_ncols=True, mininterval=0.5,
                   desc=f"{cfg.family} ×{len(members)}")
    t0 = time.perf_counter()
    epoch, interrupted = start, False
    while True:
        is_last = epoch >= cfg.epochs
        log_row = epoch % cfg.eval_every == 0 or is_last
        save_now = epoch % cfg.checkpoint_every == 0 or is_last
        pending = []
        for chunk in chunks:
            if is_last:
                loss, correct = chunk.loss(chunk.train)
            else:
                grads, loss, correct = chunk.loss_and_grad()
            if log_row:  # a row describes epoch e: test the weights before this step's update
                test_loss, test_correct = chunk.loss(chunk.test)
                _log(chunk, epoch, loss, correct, test_loss, test_correct, time.perf_counter() - t0, on_eval)
            if not is_last:
                if save_now:  # the checkpoint holds the weights before this step: update after saving
                    pending.append((chunk, grads))
                else:
                    chunk.optimizer.update(grads, epoch)
        if save_now:
            save(epoch, time.perf_counter() - t0, weights=True)
        if is_last:
            break
        for chunk, grads in pending:
            chunk.optimizer.update(grads, epoch)
        epoch += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(models=len(members), chunk=size, refresh=False)
        if stop.requested:
            save(epoch, time.perf_counter() - t0, weights=False)
            interrupted = True
            break
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    for chunk in chunks:
        chunk.write_back()
    return [(m, _result(m, epoch, interrupted, m.elapsed0 + elapsed, len(members), size)) for m in members]


def _split_chunks(members: list[_Member], size: int) -> list[list[_Member]]:
    """Consecutive chunks of ``size`` models; a lone model left at the end joins the chunk before it,
    so with ``size`` >= 2 every model trains in a batched (bmm) step and rounds alike."""
    chunks = [members[i:i + size] for i in range(0, len(members), size)]
    if size > 1 and len(chunks) > 1 and len(chunks[-1]) == 1:
        last = chunks.pop()  # pop first: `chunks[-2] += chunks.pop()` indexes the shortened list
        chunks[-1] += last
    return chunks


def _log(chunk: _Chunk, epoch: int, loss: Tensor, correct: Tensor, test_loss: Tensor, test_correct: Tensor,
         elapsed: float, on_eval: Callable[[dict], None] | None) -> None:
    values = [t.detach().cpu().tolist() for t in (loss, correct, test_loss, test_correct)]
    for i, m in enumerate(chunk.members):
        row = {
            "epoch": epoch,
            "train_loss": float(values[0][i]),
            "train_acc": int(round(values[1][i])) / chunk.train.n[i],
            "test_loss": float(values[2][i]),
            "test_acc": int(round(values[3][i])) / chunk.test.n[i],
            "elapsed_s": m.elapsed0 + elapsed,
        }
        m.rows.append(row)
        if on_eval is not None:
            on_eval({**row, "run_dir": m.out_dir})


def _result(m: _Member, epoch: int, interrupted: bool, elapsed: float, stack_size: int, chunk_size: int) -> StackResult:
    return StackResult(
        model=m.model, config=m.cfg, split=m.split, metrics=pd.DataFrame(m.rows, columns=runs.METRIC_COLUMNS),
        epoch=epoch, interrupted=interrupted, resumed_from=m.resumed_from, elapsed_s=elapsed, run_dir=m.out_dir,
        stack_size=stack_size, chunk_size=chunk_size,
    )

