"""Checkpoint formats in the wild (docs/formats.md), read safely and returned in mechgrok's terms.

Two foreign formats are read:

* ``"transformer_lens_demo"``: the ``.pth`` that TransformerLens's Grokking_Demo notebook saves,
  a dict with ``model``, ``config`` (a pickled ``HookedTransformerConfig``), ``checkpoints``,
  ``checkpoint_epochs``, ``train_losses``, ``test_losses``, ``train_indices``, ``test_indices``.
* ``"original"``: the original paper's ``full_run_data.pth``, a dict with ``model``,
  ``config`` (a plain dict), ``state_dicts``, ``epochs``, ``train_losses``, ``test_losses``,
  whose weights are in the original code's own layout and are converted here.

Nothing is unpickled beyond ``torch.load(..., weights_only=True)``. The one object that the
demo's pickle needs beyond tensors and containers, its ``HookedTransformerConfig`` (with a
few numpy float scalars inside), is rebuilt as an inert stand-in that only stores the pickled
attributes: the real TransformerLens class is never allowlisted, and any other object makes
``read_foreign`` raise a ``ValueError`` that names it.

Epoch numbers are kept as each file records them: both formats record the 0-based index of
the epoch whose optimiser step has just been taken (the demo's first checkpoint is epoch 99,
the original's is epoch 0).

Entry points: :func:`read_foreign` (everything, converted), :func:`iter_foreign_checkpoints` and
:func:`read_foreign_epoch` (one epoch at a time; ``Run.iter_checkpoints`` / ``Run.load_epoch``
of a ``load_checkpoint``-ed file use them), and :func:`import_run`, which writes an ordinary
run folder (``mechgrok import FILE --out RUN``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from mechgrok import torchfile
from mechgrok.config import Config
from mechgrok.models import original
from mechgrok.models.transformer import BUFFER_NAMES, PARAMETER_NAMES
from mechgrok.tasks.base import Split, python_shuffle_split

__all__ = ["FORMATS", "ForeignRun", "import_run", "iter_foreign_checkpoints", "read_foreign", "read_foreign_epoch"]

FORMATS = ("transformer_lens_demo", "original")

# The 16 parameters of mechgrok's HookedTransformer, in build_model's order; buffers are dropped.
HOOKED_PARAMETERS = PARAMETER_NAMES
# The original code's parameters, in the order its module registers them (mechgrok.models.original).
_ORIGINAL_PARAMETERS = original.ORIGINAL_PARAMETERS

_DEMO_KEYS = (
    "model", "config", "checkpoints", "checkpoint_epochs", "train_losses", "test_losses", "train_indices", "test_indices"
)  # fmt: skip
_ORIGINAL_KEYS = ("model", "config", "state_dicts", "epochs", "train_losses", "test_losses")
# The original code's Config defaults, for fields its saved dict may leave out.
_ORIGINAL_DEFAULTS = {"lr": 1e-3, "weight_decay": 1.0, "fn_name": "add", "num_epochs": 50_000, "save_every": 100}
# The original's fn_name -> mechgrok's op ("rand" has no mechgrok counterpart).
_ORIGINAL_OPS = {"add": "add", "subtract": "sub", "x2xyy2": "x2xyy2"}
# The original stores the test loss every 10 epochs (docs/formats.md) unless it stored one per epoch.
_ORIGINAL_TEST_LOSS_STRIDE = 10
# The largest p read from a foreign file (the paper's is 113): a split of p² indices is built
# from it, so a damaged config cannot ask for gigabytes.
MAX_P = 1000


@dataclass(frozen=True)
class ForeignRun:
    """A foreign run in mechgrok's terms.

    ``state_dict`` and every checkpoint hold exactly the 16 parameters of
    ``build_model(config, d_vocab_out=d_vocab_out)`` in HookedTransformer layout (biases the
    format lacks are zeros), and no buffers, so load them with ``strict=False``: the only
    missing keys are the attention ``mask`` and ``IGNORE`` buffers.

    ``final_epoch`` numbers ``state_dict`` (the file's final weights) the way the file numbers
    its checkpoints: the 0-based index of the last step taken, i.e. one less than the number
    of losses recorded (the demo's final weights are its epoch 299 checkpoint).
    """

    format: str
    config: Config
    d_vocab_out: int
    state_dict: dict[str, Tensor]
    checkpoints: list[tuple[int, dict[str, Tensor]]]
    split: Split
    metrics: pd.DataFrame | None
    final_epoch: int

    @property
    def epochs(self) -> list[int]:
        """Every epoch whose weights the file holds: its checkpoints, then ``final_epoch``
        unless a checkpoint already has that number (then that checkpoint stands for it)."""
        saved = [epoch for epoch, _ in self.checkpoints]
        return saved if self.final_epoch in saved else [*saved, self.final_epoch]


@dataclass
class _Checkpoints:
    """A file's checkpoints as loaded, converted to HookedTransformer layout only when asked."""

    key: str  # the file's key for them, for error messages
    epochs: list[int]
    raw: list[Any]
    convert: Callable[[str, Any], dict[str, Tensor]]

    def at(self, i: int) -> dict[str, Tensor]:
        return self.convert(f"{self.key}[{i}]", self.raw[i])

    def consume(self) -> Iterator[tuple[int, dict[str, Tensor]]]:
        """Each checkpoint in turn, converted; the file's copy is dropped once converted, so a
        50k-epoch original run is never held twice."""
        for i, epoch in enumerate(self.epochs):
            state = self.at(i)
            self.raw[i] = None
            yield epoch, state


def read_foreign(path: str | os.PathLike[str]) -> ForeignRun:
    """Read a TransformerLens Grokking_Demo ``.pth`` or the original paper's ``full_run_data.pth``.

    Detects the format from the keys; raises ``ValueError`` naming the path and what is wrong for
    a truncated or foreign file, a disallowed pickled object, or weights whose shapes do not
    match the config. Every checkpoint is converted and held; to visit them one at a time use
    :func:`iter_foreign_checkpoints`, and to make an ordinary run folder :func:`import_run`.
    Example::

        from mechgrok.runs import model_from_state

        run = read_foreign("grokking_demo.pth")
        model = model_from_state(run.config, run.state_dict, run.split, run.d_vocab_out)
    """
    run, saved = _open(os.fspath(path))
    return dataclasses.replace(run, checkpoints=list(saved.consume()))


def iter_foreign_checkpoints(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Tensor]]]:
    """(epoch, state_dict) for every epoch of :attr:`ForeignRun.epochs`, in order: each saved
    checkpoint, then the final weights. The file is read once and each checkpoint is converted
    only when its turn comes, so only the file's tensors and one converted copy are held."""
    run, saved = _open(os.fspath(path))
    yield from _with_final(saved.consume(), run)


def read_foreign_epoch(path: str | os.PathLike[str], epoch: int) -> dict[str, Tensor]:
    """The weights a foreign file holds at ``epoch`` (a saved checkpoint, or ``final_epoch``),
    converted as :func:`read_foreign` converts them; the file is read, the others are not converted."""
    path = os.fspath(path)
    run, saved = _open(path)
    if epoch in saved.epochs:
        return saved.at(saved.epochs.index(epoch))
    if epoch == run.final_epoch:
        return run.state_dict
    epochs = [*saved.epochs, run.final_epoch]
    raise ValueError(
        f"{path} holds no weights at epoch {epoch}; it holds epochs {_summary(epochs)} "
        f"(the final weights are epoch {run.final_epoch}); pass one of those"
    )


def _summary(epochs: Sequence[int]) -> str:
    return ", ".join(map(str, epochs)) if len(epochs) <= 4 else f"{epochs[0]}, {epochs[1]}, ..., {epochs[-1]}"


def _open(path: str) -> tuple[ForeignRun, _Checkpoints]:
    """The file's run with ``checkpoints`` still empty, and its checkpoints, not yet converted."""
    data = _safe_load(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: a torch checkpoint holding a {type(data).__name__}, not a dict; "
            f"mechgrok reads dicts with keys {list(_DEMO_KEYS)} (TransformerLens Grokking demo) "
            f"or {list(_ORIGINAL_KEYS)} (the original paper's full_run_data.pth)"
        )
    config = data.get("config")
    if "train_indices" in data or isinstance(config, _InertConfig):
        return _open_demo(path, data)
    if isinstance(config, dict) and "model" in data:
        return _open_original(path, data)
    raise ValueError(
        f"{path}: a torch checkpoint, but in neither format mechgrok reads: its keys are "
        f"{sorted(map(str, data))}; the TransformerLens Grokking demo has {list(_DEMO_KEYS)} "
        f"and the original paper's full_run_data.pth has {list(_ORIGINAL_KEYS)} (with config a plain dict)"
    )


def _final_epoch(steps: int, saved: Sequence[int]) -> int:
    """The file's own number for its final weights: the index of the last step taken (both
    formats number a checkpoint by the step just taken), and never before a saved checkpoint."""
    return max([steps - 1, 0, *saved])


# ---------------------------------------------------------------------------------------------
# Importing: a foreign file becomes an ordinary run folder


def import_run(path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Write an ordinary mechgrok run folder at ``out_dir`` from a foreign file; returns ``out_dir``.

    ``out_dir`` must not exist or be empty; anything else raises ``ValueError`` and is left
    untouched. The folder is built beside it and renamed into place when complete, so an
    interrupted import leaves no half-written run. It holds:

    * ``checkpoints/epoch_*.safetensors``: every epoch of :attr:`ForeignRun.epochs`, numbered as
      the file numbers them (the demo's 99, 199, ...: the state after 100, 200, ... steps), and
      the final weights unless a checkpoint has their number (the original's last checkpoint is
      epoch 49,900, its final weights epoch 49,999).
    * ``config.json``: the file's config with ``epochs`` = the last of those epochs,
      ``checkpoint_every`` inferred from the checkpoints, and ``eval_every`` equal to it.
    * ``split.safetensors``: the file's split.
    * ``metrics.csv``: train and test loss and accuracy computed from each checkpoint's weights
      (the trainer's exact forward, in ``config.loss_dtype``), one row per checkpoint; the files
      record no accuracies, and their losses were taken one step away from the saved weights.
      ``elapsed_s`` is NaN: the files record no times.
    * ``source_losses.csv``: the file's own per-epoch loss history as it records it (NaN where it
      has none), and ``imported.json``: where the run came from.

    The unembed is narrowed to the p residues' logits, as every mechgrok run folder has it
    (``Config.d_vocab_out == p``). The original's unembed is 114 wide (p + 1, or more for a run
    with p != 113): its extra columns are the logits of ``=`` and of tokens that never occur,
    which no label ever is and no mechgrok analysis reads (:func:`mechgrok.scoring.task_logits`),
    so argmax accuracy and every progress measure are unchanged; only a cross-entropy taken over
    all 114 logits (the original's training loss) differs. :func:`mechgrok.runs.load_checkpoint`
    on the file itself keeps the unembed as the file has it.

    No ``resume.safetensors`` is written: the files hold no optimizer state, so training cannot
    go on exactly, and ``mechgrok train`` on the folder refuses rather than guess it.
    """
    from mechgrok import runs
    from mechgrok.models.fastpath import FastPath
    from mechgrok.models.transformer import build_model
    from mechgrok.tasks.modular import ModularTask

    source = os.fspath(path)
    out_dir = Path(out_dir)
    runs.check_new_run_folder(out_dir)
    run, saved = _open(source)
    epochs = run.epochs
    cfg = run.config
    checkpoint_every = _checkpoint_every(saved.epochs) if len(saved.epochs) > 1 else cfg.checkpoint_every
    cfg = cfg.replace(epochs=epochs[-1], checkpoint_every=checkpoint_every, eval_every=checkpoint_every)
    task = ModularTask(cfg.p, cfg.op)
    tokens, labels, split = task.tokens(), task.labels(), run.split
    evals = {
        name: FastPath(tokens[idx], labels[idx], loss_dtype=cfg.loss_dtype) for name, idx in (("train", split.train), ("test", split.test))
    }
    model = build_model(cfg, split=split)  # one model; each checkpoint's weights are copied in
    rows = []
    with runs.new_run_folder(out_dir) as folder:
        runs.write_config(folder, cfg)
        runs.write_split(folder, split)
        for epoch, state in _with_final(saved.consume(), run):
            model.load_state_dict(_task_unembed(state, cfg.p), strict=False)
            runs.save_checkpoint(runs.checkpoint_path(folder, epoch), model, cfg, split, epoch,
                                 extra={"imported_from": run.format})
            row: dict[str, float] = {"epoch": epoch}
            for name, fast in evals.items():
                loss, correct = fast.loss(model)
                row[f"{name}_loss"] = float(loss)
                row[f"{name}_acc"] = int(correct) / fast.n
            rows.append({**row, "elapsed_s": float("nan")})
        runs.write_metrics(folder, rows)
        if run.metrics is not None:
            runs.atomic_write_text(folder / runs.SOURCE_LOSSES_FILE, run.metrics.to_csv(index=False))
        record = {
            "format": "mechgrok-import",
            "source": os.path.abspath(source),
            "source_format": run.format,
            "source_d_vocab_out": run.d_vocab_out,
            "epochs": epochs,
            "resumable": False,
        }
        runs.atomic_write_text(folder / runs.IMPORT_FILE, json.dumps(record, indent=2) + "\n")
    return out_dir


def _with_final(checkpoints: Iterator[tuple[int, dict[str, Tensor]]], run: ForeignRun) -> Iterator[tuple[int, dict[str, Tensor]]]:
    seen = []
    for epoch, state in checkpoints:
        seen.append(epoch)
        yield epoch, state
    if run.final_epoch not in seen:
        yield run.final_epoch, run.state_dict


def _task_unembed(state: dict[str, Tensor], p: int) -> dict[str, Tensor]:
    """The weights with the unembed cut to the p residues' logits (columns past p never score a label)."""
    return {**state, "unembed.W_U": state["unembed.W_U"][:, :p], "unembed.b_U": state["unembed.b_U"][:p]}


# ---------------------------------------------------------------------------------------------
# Safe loading


class _Refused(ValueError):
    """Raised inside unpickling by a stand-in that was fed something a real file never holds."""


class _InertConfig:
    """Stands in for a pickled ``HookedTransformerConfig``: keeps its attributes, does nothing.

    A protocol-2 pickle rebuilds a dataclass with ``cls.__new__(cls)`` and then hands it its
    ``__dict__``; both land here, so no TransformerLens code runs.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> _InertConfig:
        # NEWOBJ calls __new__ alone (no __init__), so arguments are refused here too
        if args or kwargs:
            raise _Refused("the pickled HookedTransformerConfig was called with arguments, which a real one never is")
        obj = super().__new__(cls)
        obj.fields = {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            raise _Refused("the pickled HookedTransformerConfig was called with arguments, which a real one never is")

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
            kind = type(state).__name__
            raise _Refused(f"the pickled HookedTransformerConfig has a state of type {kind}, not a dict of fields")
        self.fields = dict(state)


# numpy dtype codes that may appear in a pickled numpy scalar -> struct format characters.
_NUMPY_CODES = {
    "f8": "d", "f4": "f", "f2": "e",
    "i8": "q", "i4": "i", "i2": "h", "i1": "b",
    "u8": "Q", "u4": "I", "u2": "H", "u1": "B",
    "b1": "?",
}  # fmt: skip


class _InertDType:
    """Stands in for a pickled ``numpy.dtype`` of a plain number (TransformerLens stores
    ``attn_scale = np.sqrt(d_head)``, a numpy float64, in its config)."""

    def __init__(self, code: Any, align: Any = False, copy: Any = False) -> None:
        if code not in _NUMPY_CODES:
            raise _Refused(f"numpy dtype {code!r} is not a plain number type {sorted(_NUMPY_CODES)}")
        self.code = code
        self.byteorder = "<"

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state is (version, byteorder, subarray, names, fields, itemsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise _Refused(f"unexpected numpy dtype state {state!r}")
        self.byteorder = "<" if state[1] == "|" else state[1]  # "|": byte order does not apply (1 byte)


def _inert_numpy_scalar(dtype: Any, data: Any) -> int | float | bool:
    """Stands in for ``numpy.core.multiarray.scalar``: decodes the raw bytes of a plain number."""
    if not isinstance(dtype, _InertDType) or not isinstance(data, bytes):
        raise _Refused("a pickled numpy scalar that is not a plain number")
    fmt = dtype.byteorder + _NUMPY_CODES[dtype.code]
    if len(data) != struct.calcsize(fmt):
        raise _Refused(f"a pickled numpy scalar of dtype {dtype.code!r} has {len(data)} bytes")
    return struct.unpack(fmt, data)[0]


# Qualified names -> inert stand-ins. Everything else beyond torch's own weights-only allowlist
# (tensors, storages, dtypes, devices, plain containers) is refused.
_SAFE_GLOBALS = [
    # TransformerLens 1.x-2.x, early 3.x, and 3.x from 3.9 on moved the class between modules.
    (_InertConfig, "transformer_lens.HookedTransformerConfig.HookedTransformerConfig"),
    (_InertConfig, "transformer_lens.config.HookedTransformerConfig.HookedTransformerConfig"),
    (_InertConfig, "transformer_lens.config.hooked_transformer_config.HookedTransformerConfig"),
    # numpy 1.x and 2.x name the scalar constructor differently.
    (_inert_numpy_scalar, "numpy.core.multiarray.scalar"),
    (_inert_numpy_scalar, "numpy._core.multiarray.scalar"),
    (_InertDType, "numpy.dtype"),
]
_ALLOWED_NAMES = frozenset(name for _, name in _SAFE_GLOBALS)


def _safe_load(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not a .pth file; pass the file (or a run folder without the .pth suffix)") from None
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"{path}: truncated or corrupt torch checkpoint (the zip archive has no central directory, "
                "which torch.save writes last); re-download or re-save the file"
            )
    elif not head.startswith(b"\x80"):
        # torch.save writes a zip archive; before torch 1.6 it wrote a bare pickle, which opens
        # with the PROTO opcode 0x80.
        raise ValueError(f"{path}: not a torch checkpoint (it starts with {head!r}, not a zip archive or a pickle)")
    # Every global, storage and tensor of the pickle is checked before torch builds any of them.
    torchfile.check_torch_file(path, torchfile.TORCH_GLOBALS | _ALLOWED_NAMES)
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except _Refused as err:
        raise ValueError(f"{path}: {err}; mechgrok refuses to unpickle it") from err
    except pickle.UnpicklingError as err:
        match = re.search(r"GLOBAL (\S+)", str(err))
        if match:
            _refuse(path, [match.group(1)])
        reason = _torch_reason(err)
        raise ValueError(f"{path}: could not be unpickled safely ({reason}); mechgrok refuses to unpickle it") from err
    except Exception as err:
        raise ValueError(
            f"{path}: not a readable torch checkpoint (truncated, corrupt, or not written by torch.save): "
            f"{type(err).__name__}: {_first_line(err)}"
        ) from err


def _refuse(path: str, names: Sequence[str]) -> None:
    if names:
        raise ValueError(
            f"{path}: the file contains a disallowed object ({', '.join(names)}); mechgrok refuses to unpickle it, "
            "because unpickling it could run arbitrary code. mechgrok reads only tensors, plain containers "
            "and the TransformerLens Grokking demo's config. If you trust the file, re-save its tensors yourself."
        )


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]


def _torch_reason(err: BaseException) -> str:
    # torch wraps the reason in boilerplate about the weights_only default; keep the reason.
    lines = [line for line in str(err).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(("Weights only load failed", "Check the documentation"))]
    return (reasons or lines or [type(err).__name__])[0]


# ---------------------------------------------------------------------------------------------
# The TransformerLens Grokking demo


def _open_demo(path: str, data: dict) -> tuple[ForeignRun, _Checkpoints]:
    _require_keys(path, data, ("model", "config", "train_indices", "test_indices"), "the TransformerLens Grokking demo")
    raw = data["config"]
    if isinstance(raw, _InertConfig):
        fields = raw.fields
        if not fields:
            raise ValueError(f"{path}: config is a HookedTransformerConfig with no fields (the pickle gave it no state); "
                             "a Grokking demo file's config holds d_model, n_heads, d_vocab, ...")
    elif isinstance(raw, dict):
        fields = raw
    else:
        raise ValueError(f"{path}: config is a {type(raw).__name__}; the Grokking demo saves a HookedTransformerConfig")

    def field(name: str) -> Any:
        if name not in fields:
            raise ValueError(f"{path}: the HookedTransformerConfig has no field {name!r}; is this a Grokking demo file?")
        return fields[name]

    def int_field(name: str) -> int:
        return _as_int(path, f"config.{name}", field(name))

    # The architecture must be the one mechgrok's model has (docs/training.md).
    for name, want in (("n_layers", 1), ("n_ctx", 3)):
        if int_field(name) != want:
            raise ValueError(f"{path}: config.{name}={fields[name]!r}, but mechgrok's model has {name}={want}")
    optional = (("act_fn", "relu"), ("normalization_type", None), ("attn_only", False), ("positional_embedding_type", "standard"))
    for name, want in optional:
        if name in fields and fields[name] != want:
            raise ValueError(f"{path}: config.{name}={fields[name]!r}, but mechgrok's model has {name}={want!r}")
    d_model, n_heads, d_head, d_mlp = (int_field(n) for n in ("d_model", "n_heads", "d_head", "d_mlp"))
    if n_heads * d_head != d_model:
        raise ValueError(
            f"{path}: config has n_heads={n_heads} × d_head={d_head} != d_model={d_model}; "
            "mechgrok needs d_head = d_model / n_heads"
        )
    if fields.get("use_attn_scale", True) is not True or not _is_unset_or_close(fields.get("attn_scale"), math.sqrt(d_head)):
        raise ValueError(f"{path}: config scales attention by {fields.get('attn_scale')!r}, not sqrt(d_head)={math.sqrt(d_head)}")
    d_vocab = int_field("d_vocab")
    p = d_vocab - 1  # the "=" token is p, the last input token
    _check_p(path, "config.d_vocab - 1", p)
    d_vocab_out = int_field("d_vocab_out")
    if d_vocab_out not in (p, p + 1):
        raise ValueError(
            f"{path}: config has d_vocab={d_vocab} and d_vocab_out={d_vocab_out}; "
            "a mod-p task has d_vocab=p+1 and d_vocab_out=p or p+1"
        )
    seed = fields.get("seed")

    split = _demo_split(path, data["train_indices"], data["test_indices"], p)
    train_losses = _losses(path, data, "train_losses")
    test_losses = _losses(path, data, "test_losses")
    checkpoint_epochs, checkpoint_sds = _checkpoint_lists(path, data, "checkpoint_epochs", "checkpoints")
    epochs = len(train_losses) if train_losses is not None else (checkpoint_epochs[-1] + 1 if checkpoint_epochs else 0)
    config = _make_config(
        path,
        p=p,
        frac_train=_frac_train(len(split.train), p * p),
        seed=0 if seed is None else _as_int(path, "config.seed", seed),
        d_model=d_model,
        n_heads=n_heads,
        d_mlp=d_mlp,
        init="transformer_lens",
        # The demo's own settings; its file does not record them.
        lr=1e-3,
        weight_decay=1.0,
        beta1=0.9,
        beta2=0.98,
        warmup_steps=0,
        epochs=epochs,
        eval_every=1,
        checkpoint_every=_checkpoint_every(checkpoint_epochs),
    )
    expected = _hooked_shapes(config, d_vocab_out)

    def convert(where: str, sd: Any) -> dict[str, Tensor]:
        return _demo_state_dict(path, where, sd, expected, p)

    run = ForeignRun(
        format="transformer_lens_demo",
        config=config,
        d_vocab_out=d_vocab_out,
        state_dict=convert("model", data["model"]),
        checkpoints=[],
        split=split,
        metrics=_metrics(train_losses, test_losses, test_stride=1),
        final_epoch=_final_epoch(epochs, checkpoint_epochs),
    )
    return run, _Checkpoints("checkpoints", checkpoint_epochs, checkpoint_sds, convert)


def _demo_state_dict(path: str, where: str, sd: Any, expected: dict[str, tuple[int, ...]], p: int) -> dict[str, Tensor]:
    sd = _as_state_dict(path, where, sd)
    params = {key: value for key, value in sd.items() if key not in BUFFER_NAMES}
    for name, shape in expected.items():  # a format without a bias means a zero bias
        if name.split(".")[-1].startswith("b_") and name not in params:
            params[name] = torch.zeros(shape)
    _check_shapes(path, where, params, expected, p)
    return {name: params[name].contiguous() for name in HOOKED_PARAMETERS}


def _demo_split(path: str, train: Any, test: Any, p: int) -> Split:
    train_idx = _as_indices(path, "train_indices", train)
    test_idx = _as_indices(path, "test_indices", test)
    n_pairs = p * p  # every pair (a, b) of the add task; Config validates p itself
    both = torch.cat([train_idx, test_idx])
    if len(both) != n_pairs or both.min() < 0 or both.max() >= n_pairs or len(torch.unique(both)) != n_pairs:
        raise ValueError(
            f"{path}: train_indices ({len(train_idx)}) and test_indices ({len(test_idx)}) do not split the "
            f"p²={n_pairs} pairs of p={p} (from config.d_vocab) into two disjoint sets; is the file from another p?"
        )
    return Split(train=train_idx, test=test_idx)


def _is_unset_or_close(value: Any, want: float) -> bool:
    # TransformerLens treats only attn_scale == -1.0 as unset (then sqrt(d_head)); 0 or -2 would scale by 0 or -2
    return value is None or (isinstance(value, Real) and (value == -1.0 or math.isclose(float(value), want, rel_tol=1e-6)))


# ---------------------------------------------------------------------------------------------
# The original paper's full_run_data.pth


def _open_original(path: str, data: dict) -> tuple[ForeignRun, _Checkpoints]:
    raw: dict = data["config"]
    missing = sorted({"p", "d_model", "frac_train", "seed"} - set(raw))
    if missing:
        raise ValueError(f"{path}: the original run's config dict lacks {missing}; it has {sorted(map(str, raw))}")
    cfg = {**_ORIGINAL_DEFAULTS, **raw}
    p = _as_int(path, "config.p", cfg["p"])
    _check_p(path, "config.p", p)
    d_model = _as_int(path, "config.d_model", cfg["d_model"])
    if cfg["fn_name"] not in _ORIGINAL_OPS:
        raise ValueError(f"{path}: config.fn_name={cfg['fn_name']!r}; mechgrok reads {sorted(_ORIGINAL_OPS)}")

    model = _as_state_dict(path, "model", data["model"])
    # The config dict does not record n_heads or d_mlp; the weights do.
    for key, ndim in (("blocks.0.attn.W_Q", 3), ("blocks.0.mlp.W_in", 2), ("unembed.W_U", 2)):
        if key not in model or model[key].ndim != ndim:
            raise ValueError(f"{path}: model has no {ndim}-D {key!r}; the original layout has {list(_ORIGINAL_PARAMETERS)}")
    n_heads, d_head, _ = model["blocks.0.attn.W_Q"].shape
    d_mlp = model["blocks.0.mlp.W_in"].shape[0]
    # The original's d_vocab was fixed at 114 (p=113 + 1) when its Config class was defined, so a
    # run with another p still has 114-wide embed and unembed. Tokens above p never occur.
    d_vocab = model["unembed.W_U"].shape[1]
    if d_vocab < p + 1:
        raise ValueError(
            f"{path}: unembed.W_U is {d_vocab} wide, but config.p={p} needs at least p+1={p + 1}; is the file from another p?"
        )
    if n_heads * d_head != d_model:
        raise ValueError(f"{path}: W_Q has {n_heads} heads of d_head={d_head}, which does not make config.d_model={d_model}")
    expected = original.original_shapes(n_heads, d_head, d_model, d_mlp, d_vocab)

    train_losses = _losses(path, data, "train_losses")
    test_losses = _losses(path, data, "test_losses")
    every_epoch = train_losses is not None and test_losses is not None and len(test_losses) == len(train_losses)
    stride = 1 if every_epoch else _ORIGINAL_TEST_LOSS_STRIDE
    checkpoint_epochs, checkpoint_sds = _checkpoint_lists(path, data, "epochs", "state_dicts")
    config = _make_config(
        path,
        p=p,
        op=_ORIGINAL_OPS[cfg["fn_name"]],
        frac_train=cfg["frac_train"],
        seed=_as_int(path, "config.seed", cfg["seed"]),
        d_model=d_model,
        n_heads=n_heads,
        d_mlp=d_mlp,
        init="paper",
        split="python",
        lr=cfg["lr"],
        weight_decay=cfg["weight_decay"],
        beta1=0.9,
        beta2=0.98,
        warmup_steps=10,
        epochs=_as_int(path, "config.num_epochs", cfg["num_epochs"]),
        eval_every=stride,
        checkpoint_every=_as_int(path, "config.save_every", cfg["save_every"]),
    )

    def convert(where: str, sd: Any) -> dict[str, Tensor]:
        sd = _as_state_dict(path, where, sd)
        params = {key: value for key, value in sd.items() if key != "blocks.0.attn.mask"}
        _check_shapes(path, where, params, expected, p)
        hooked = original.to_hooked(params, p)
        return {name: hooked[name] for name in HOOKED_PARAMETERS}

    # The loss history counts the steps taken, even when the run stopped before num_epochs.
    steps = len(train_losses) if train_losses is not None else config.epochs
    run = ForeignRun(
        format="original",
        config=config,
        d_vocab_out=d_vocab,
        state_dict=convert("model", model),
        checkpoints=[],
        split=python_shuffle_split(p * p, config.frac_train, config.seed),
        metrics=_metrics(train_losses, test_losses, test_stride=stride),
        final_epoch=_final_epoch(steps, checkpoint_epochs),
    )
    return run, _Checkpoints("state_dicts", checkpoint_epochs, checkpoint_sds, convert)


# ---------------------------------------------------------------------------------------------
# Shared checks


def _hooked_shapes(cfg: Config, d_vocab_out: int) -> dict[str, tuple[int, ...]]:
    h, d, dh, m = cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_mlp
    return {
        "embed.W_E": (cfg.d_vocab, d),
        "pos_embed.W_pos": (cfg.n_ctx, d),
        "blocks.0.attn.W_Q": (h, d, dh),
        "blocks.0.attn.W_O": (h, dh, d),
        "blocks.0.attn.b_Q": (h, dh),
        "blocks.0.attn.b_O": (d,),
        "blocks.0.attn.W_K": (h, d, dh),
        "blocks.0.attn.W_V": (h, d, dh),
        "blocks.0.attn.b_K": (h, dh),
        "blocks.0.attn.b_V": (h, dh),
        "blocks.0.mlp.W_in": (d, m),
        "blocks.0.mlp.b_in": (m,),
        "blocks.0.mlp.W_out": (m, d),
        "blocks.0.mlp.b_out": (d,),
        "unembed.W_U": (d, d_vocab_out),
        "unembed.b_U": (d_vocab_out,),
    }


def _check_shapes(path: str, where: str, sd: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], p: int) -> None:
    missing = [key for key in expected if key not in sd]
    unexpected = [key for key in sd if key not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{path}: {where} does not have the weights of a 1-layer model without LayerNorm: "
            f"missing {missing}, unexpected {unexpected}"
        )
    wrong = [f"{key} is {tuple(sd[key].shape)}, expected {shape}" for key, shape in expected.items() if sd[key].shape != shape]
    if wrong:
        raise ValueError(
            f"{path}: {where} does not match its config (p={p}): {'; '.join(wrong)}; "
            "is the file from another p or model size?"
        )
    not_float = [f"{key} ({sd[key].dtype})" for key in expected if sd[key].dtype not in (torch.float32, torch.float64)]
    if not_float:
        raise ValueError(f"{path}: {where} has weights that are not float32 or float64: {', '.join(not_float)}; "
                         "mechgrok reads a trained model's float weights as they are, and casts none")


def _check_p(path: str, where: str, p: int) -> None:
    """A foreign file's p is capped before its split (p² indices) is built."""
    if p > MAX_P:
        raise ValueError(f"{path}: {where} gives p={p}, over the p <= {MAX_P} mechgrok reads from a foreign file "
                         f"(mechgrok.formats.MAX_P; its split alone would hold p² = {p * p:,} indices); is the file damaged?")


def _as_state_dict(path: str, where: str, sd: Any) -> dict[str, Tensor]:
    if not isinstance(sd, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in sd.items()):
        raise ValueError(f"{path}: {where} is not a state_dict (a mapping of names to tensors)")
    return dict(sd)


def _as_int(path: str, where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{path}: {where}={value!r} is not an integer")
    return int(value)


def _as_indices(path: str, where: str, value: Any) -> Int[Tensor, "n"]:
    try:
        indices = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: {where} is not a list of pair indices ({err})") from err
    if indices.ndim != 1 or indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        got = f"{indices.dtype} {tuple(indices.shape)}"
        raise ValueError(f"{path}: {where} must be a 1-D integer tensor of flat indices a*p + b, got {got}")
    return indices.to(torch.long)


def _require_keys(path: str, data: dict, keys: Sequence[str], what: str) -> None:
    missing = [key for key in keys if key not in data]
    if missing:
        raise ValueError(f"{path}: looks like {what}'s file but lacks {missing}; it has {sorted(map(str, data))}")


def _losses(path: str, data: dict, key: str) -> list[float] | None:
    if key not in data or data[key] is None:
        return None
    values = data[key]
    if isinstance(values, Tensor):
        values = values.flatten().tolist()
    if not isinstance(values, Sequence):
        raise ValueError(f"{path}: {key} is a {type(values).__name__}, not a list of losses")
    out = []
    for value in values:
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, Real):
            raise ValueError(f"{path}: {key} holds {value!r}, not a number")
        out.append(float(value))
    return out


def _checkpoint_lists(path: str, data: dict, epochs_key: str, sds_key: str) -> tuple[list[int], list[Any]]:
    epochs = data.get(epochs_key)
    sds = data.get(sds_key)
    epochs = [] if epochs is None else epochs.tolist() if isinstance(epochs, Tensor) else epochs
    sds = [] if sds is None else sds
    if not isinstance(epochs, Sequence) or not isinstance(sds, Sequence):
        raise ValueError(f"{path}: {epochs_key} and {sds_key} must be lists")
    if len(epochs) != len(sds):
        raise ValueError(f"{path}: {len(sds)} {sds_key} but {len(epochs)} {epochs_key}; they must pair up")
    # The loaded list itself, not a copy, so that a caller may drop each entry once converted.
    return [_as_int(path, f"{epochs_key}[{i}]", e) for i, e in enumerate(epochs)], sds if isinstance(sds, list) else list(sds)


def _checkpoint_every(epochs: Sequence[int]) -> int:
    gaps = {b - a for a, b in zip(epochs, epochs[1:])}
    return gaps.pop() if len(gaps) == 1 and min(gaps) > 0 else 100


def _frac_train(n_train: int, n_pairs: int) -> float:
    """The shortest decimal ``frac`` with ``int(frac * n_pairs) == n_train``, as make_split counts.

    The demo's 3830 of 12769 pairs gives back its frac_train=0.3; n_train / n_pairs itself can
    round down to n_train - 1.
    """
    for digits in range(1, 18):
        frac = round(n_train / n_pairs, digits)
        if int(frac * n_pairs) == n_train:
            return frac
    frac = n_train / n_pairs
    while int(frac * n_pairs) < n_train:
        frac = math.nextafter(frac, 1.0)
    return frac


def _make_config(path: str, **fields: Any) -> Config:
    try:
        return Config(**fields)
    except ValueError as err:
        raise ValueError(f"{path}: its settings do not make a valid mechgrok config: {err}") from err


def _metrics(train: list[float] | None, test: list[float] | None, test_stride: int) -> pd.DataFrame | None:
    if train is None and test is None:
        return None
    columns = []
    if train is not None:
        columns.append(pd.Series(train, index=range(len(train)), name="train_loss", dtype="float64"))
    if test is not None:
        columns.append(pd.Series(test, index=range(0, len(test) * test_stride, test_stride), name="test_loss", dtype="float64"))
    frame = pd.concat(columns, axis=1).sort_index()
    for name in ("train_loss", "test_loss"):
        if name not in frame:
            frame[name] = float("nan")
    frame.index.name = "epoch"
    return frame.reset_index()[["epoch", "train_loss", "test_loss"]]
