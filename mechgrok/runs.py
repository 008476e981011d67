"""Run folders and checkpoints: safe, atomic, self-describing.

A run is one folder::

    runs/<name>/
        config.json                      the Config, with the schema version
        split.safetensors                train / test indices into ModularTask.pairs()
        metrics.csv                      epoch, train/test loss and accuracy, elapsed_s
        checkpoints/epoch_000100.safetensors   weights every ``checkpoint_every`` epochs
        resume.safetensors               newest weights plus optimizer state
        imported.json, source_losses.csv only in a run imported from a foreign file
                                         (mechgrok.formats.import_run): where it came from, and
                                         the file's own loss history

Every checkpoint file is self-contained: its safetensors metadata holds the schema version,
the epoch and the config, and it carries the split, so ``load_checkpoint(file)`` needs nothing
else. Files are written to a temporary name and renamed, so a kill at any moment leaves every
existing file intact. Nothing here unpickles: safetensors stores raw tensors only, and the
foreign ``.pth`` formats go through :mod:`mechgrok.formats`'s allowlisted loader.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import shutil
import tempfile
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pandas as pd
import torch
from torch import Tensor

from mechgrok import tensorfile
from mechgrok.config import READABLE_SCHEMAS, SCHEMA_VERSION, Config
from mechgrok.tasks.base import Split, Task
from mechgrok.tasks.data import build_task, n_examples

if TYPE_CHECKING:
    from mechgrok.models.lens import HookedTransformer

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.safetensors"
METRICS_FILE = "metrics.csv"
RESUME_FILE = "resume.safetensors"
CHECKPOINT_DIR = "checkpoints"
IMPORT_FILE = "imported.json"
SOURCE_LOSSES_FILE = "source_losses.csv"
METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "elapsed_s"]
TMP_SUFFIX = ".tmp"  # atomic_write_bytes writes ".<name>.<random>.tmp" and renames it
# The files a trainer writes into a run folder; an unfinished atomic write of one of them is
# mechgrok's own debris (clear_unfinished_writes).
COMPONENTS_FILE = "components.csv"  # a sequence-task run's per-component losses (mechgrok.training.sequence)
RUN_FILES = (CONFIG_FILE, SPLIT_FILE, METRICS_FILE, RESUME_FILE, COMPONENTS_FILE)


# --------------------------------------------------------------------------- atomic writes
def _current_umask() -> int:
    """The process umask, read now (a umask can only be read by setting it, so it is set back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    try:
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes files private; run files are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # ENOSPC, EFBIG, ...: a write to an fd names no file, so name it here
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def check_new_run_folder(path: Path) -> None:
    """Raise ``ValueError`` unless ``path`` is absent or an empty folder (nothing is changed)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a folder; pass a new or empty folder")
    if path.is_dir():
        entries = sorted(entry.name for entry in path.iterdir())
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise ValueError(
                f"{path} is not empty (it holds {shown}); a new run is written only into a new or empty "
                "folder, and nothing in it was touched. Pass another folder, or empty this one yourself"
            )


@contextmanager
def new_run_folder(path: Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; on success it is renamed to ``path``.

    ``path`` must be absent or empty (:func:`check_new_run_folder`), so readers see no folder or
    a complete one, never half a run. On an error the temporary folder is removed and ``path``
    is left as it was.
    """
    path = Path(path)
    if path.is_symlink():  # fill the folder it points to; renaming onto the link would replace the link
        path = path.resolve()
    check_new_run_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        # mkdtemp makes folders private; give it the mode the empty folder had, or an ordinary one
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.is_dir() else 0o777 & ~_current_umask())
        yield tmp
        try:
            os.replace(tmp, path)  # onto an absent name, or an empty folder (rename(2) allows both)
        except OSError as err:
            raise ValueError(
                f"{path} could not be created ({err.strerror}): it is not empty any more, or not writable; "
                "nothing in it was touched and the new run was discarded. Pass another folder"
            ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- checkpoint files
def _metadata(kind: str, cfg: Config, epoch: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    meta = {
        "format": "mechgrok",
        "schema_version": str(SCHEMA_VERSION),
        "kind": kind,
        "epoch": str(epoch),
        "config": json.dumps(cfg.to_dict()),
    }
    meta.update(extra or {})
    return meta


def state_tensors(model: torch.nn.Module) -> dict[str, Tensor]:
    """The weights a checkpoint holds, on the CPU (a CPU tensor is not copied)."""
    return {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items() if not _is_buffer_name(name)}


def _is_buffer_name(name: str) -> bool:
    """A HookedTransformer's causal mask and fill value, in any block (checkpoints leave them out)."""
    parts = name.split(".")
    return len(parts) == 4 and parts[0] == "blocks" and parts[2] == "attn" and parts[3] in ("mask", "IGNORE")


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    cfg: Config,
    split: Split,
    epoch: int,
    *,
    optimizer_state: dict[str, Tensor] | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    """Write a self-contained checkpoint (weights, split, config; optionally optimizer state),
    with a checksum of its tensors (:mod:`mechgrok.tensorfile`)."""
    tensors = {f"model.{k}": v for k, v in state_tensors(model).items()}
    tensors["split.train"] = split.train.contiguous()
    tensors["split.test"] = split.test.contiguous()
    kind = "checkpoint"
    if optimizer_state is not None:
        kind = "resume"
        tensors.update({f"optim.{k}": v.contiguous() for k, v in optimizer_state.items()})
    atomic_write_bytes(Path(path), tensorfile.tensors_to_bytes(tensors, _metadata(kind, cfg, epoch, extra)))


def save_checkpoint_once(path: Path, model: torch.nn.Module, cfg: Config, split: Split, epoch: int) -> None:
    """:func:`save_checkpoint`, unless ``path`` already holds this epoch: a resumed run reaches
    the epoch of a checkpoint it wrote before, and leaves that file as it is. If the file holds
    other weights or another split, nothing is written and a ``ValueError`` says so: a resumed
    run is bit-identical, so the resume file or the checkpoint was changed since."""
    path = Path(path)
    if not path.exists():
        save_checkpoint(path, model, cfg, split, epoch)
        return
    old = read_checkpoint_file(path)
    new = state_tensors(model)
    same = (old.epoch == epoch and set(old.model_state) == set(new)
            and all(torch.equal(old.model_state[k], v) for k, v in new.items())
            and torch.equal(old.split.train, split.train) and torch.equal(old.split.test, split.test))
    if not same:
        raise ValueError(
            f"{path} already holds epoch {epoch}, with other weights than this run has now at epoch {epoch}; nothing was "
            "overwritten. A resumed run is bit-identical to the run that wrote it (at the same --threads), so the "
            f"run's {RESUME_FILE} or this checkpoint was changed or copied from another run. Train into another --out"
        )


@dataclass
class CheckpointFile:
    """The raw contents of a mechgrok checkpoint file."""

    path: Path
    config: Config
    epoch: int
    kind: str
    model_state: dict[str, Tensor]
    split: Split
    optimizer_state: dict[str, Tensor]
    metadata: dict[str, str]


def read_checkpoint_file(path: Path, into: dict[str, Tensor] | None = None) -> CheckpointFile:
    """A mechgrok checkpoint, its structure checked; ``ValueError`` naming the file and the field.

    The header is read and checked first: a file that is not a mechgrok checkpoint, or is larger
    than a checkpoint of the config it records can be, is refused before its body is read.
    ``into``: tensors to read into (:func:`mechgrok.tensorfile.read_tensors`)."""
    path = Path(path)
    cfg, epoch, kind = _checkpoint_header(path)
    damaged = ("It is not a readable mechgrok checkpoint: mechgrok writes every file whole (to a temporary name, then "
               "renamed), so a kill never leaves one like this; it was damaged or replaced afterwards")
    try:
        tensors, metadata = tensorfile.read_tensors(path, into)
    except tensorfile.DamagedFile as err:
        raise ValueError(f"{err}. {damaged}") from None
    for name in ("split.train", "split.test"):
        if name not in tensors:
            raise ValueError(f"{path} has no tensor {name!r}; a mechgrok checkpoint carries its split")
    model_state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    optim = {k.removeprefix("optim."): v for k, v in tensors.items() if k.startswith("optim.")}
    split = Split(train=tensors["split.train"], test=tensors["split.test"])
    ckpt = CheckpointFile(path, cfg, epoch, kind, model_state, split, optim, metadata)
    _check_consistent(ckpt)
    return ckpt


def _checkpoint_header(path: Path) -> tuple[Config, int, str]:
    """(config, epoch, kind) from a checkpoint's header alone, every field checked."""
    _check_exists(path)
    damaged = ("It is not a readable mechgrok checkpoint: mechgrok writes every file whole (to a temporary name, then "
               "renamed), so a kill never leaves one like this; it was damaged or replaced afterwards")
    try:
        header, _, size = tensorfile.read_header(path)
    except tensorfile.TooLarge as err:
        raise ValueError(f"{err}; if it is one, raise mechgrok.tensorfile.MAX_FILE_BYTES") from None
    except tensorfile.DamagedFile as err:
        raise ValueError(f"{err}. {damaged}") from None
    metadata = header.get("__metadata__", {})
    if metadata.get("format") != "mechgrok":
        raise ValueError(f"{path} is a safetensors file but not a mechgrok checkpoint (no 'format: mechgrok' metadata)")
    version = schema_version(path, metadata.get("schema_version"), "metadata")
    try:
        raw = json.loads(metadata["config"])
    except KeyError:
        raise ValueError(f"{path}: its metadata has no 'config'; the file is damaged or was edited") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: its metadata 'config' is not valid JSON ({err}); the file is damaged") from None
    try:
        cfg = Config.from_dict(raw, schema_version=version)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: metadata 'config': {err}") from None
    epoch = _metadata_int(path, metadata, "epoch")
    kind = metadata.get("kind")
    if kind not in ("checkpoint", "resume"):
        raise ValueError(f"{path}: its metadata 'kind' is {kind!r}, not 'checkpoint' or 'resume'; the file was edited")
    limit = _largest_checkpoint(cfg)
    if size > limit:
        raise ValueError(f"{path} is {size:,} bytes, but a checkpoint of the config it records (p={cfg.p}, "
                         f"d_model={cfg.d_model}, d_mlp={cfg.d_mlp}) holds at most {limit:,}; the file was edited")
    return cfg, epoch, kind


def _largest_checkpoint(cfg: Config) -> int:
    """An upper bound on a checkpoint's size: float64 weights and two AdamW moments, the split, a header."""
    from mechgrok.training.memory import n_parameters

    return 3 * 8 * n_parameters(cfg) + 8 * n_examples(cfg) + (8 << 20)


def _metadata_int(path: Path, metadata: dict[str, str], key: str) -> int:
    value = metadata.get(key)
    if value is None:
        raise ValueError(f"{path}: its metadata has no {key!r}; the file is damaged or was edited")
    if not value.isdigit():
        raise ValueError(f"{path}: its metadata {key!r} is {value!r}, not a whole number >= 0; the file was edited")
    return int(value)


def schema_version(path: Path, value: object, where: str) -> int:
    """The schema version ``value`` found in ``path``'s ``where``, or a ``ValueError`` that says what was found."""
    if value is None:
        raise ValueError(f"{path}: its {where} has no 'schema_version' (this mechgrok reads versions "
                         f"{READABLE_SCHEMAS}); the file is damaged or was edited")
    try:
        version = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    except ValueError:
        version = None
    if version is None:
        raise ValueError(f"{path}: its {where} 'schema_version' is {value!r}, not a whole number; the file is damaged")
    if version > SCHEMA_VERSION:
        raise ValueError(f"{path} has schema version {version}, newer than this mechgrok's {SCHEMA_VERSION} (it reads "
                         f"{READABLE_SCHEMAS}); upgrade mechgrok to read it")
    if version not in READABLE_SCHEMAS:
        raise ValueError(f"{path} has schema version {version}, which no mechgrok wrote (this one reads "
                         f"{READABLE_SCHEMAS}); the file is damaged or was edited")
    return version


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; pass a run folder, a mechgrok .safetensors checkpoint, or a foreign .pth file"
        )
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a checkpoint file")


def _check_consistent(ckpt: CheckpointFile) -> None:
    cfg, state = ckpt.config, ckpt.model_state
    W_E = state.get("embed.W_E")
    if cfg.family == "transformer" and (W_E is None or tuple(W_E.shape) != (cfg.d_vocab, cfg.d_model)):
        shape = None if W_E is None else tuple(W_E.shape)
        raise ValueError(
            f"{ckpt.path}: its config says p={cfg.p}, d_model={cfg.d_model}, so W_E should be "
            f"{(cfg.d_vocab, cfg.d_model)}, but it is {shape}; the file is damaged or was edited"
        )
    check_split(ckpt.path, cfg, ckpt.split)


def check_split(path: Path, cfg: Config, split: Split) -> None:
    """Raise ``ValueError`` unless ``split`` is two disjoint sets of valid example indices of ``cfg``'s task."""
    n = n_examples(cfg)
    limit = n  # indices run over the task's examples; an unordered split indexes the p x p grid
    if cfg.task == "modular" and cfg.pairs == "unordered":
        n = cfg.p * (cfg.p + 1) // 2  # a split of the pairs a <= b only
    for name, idx in (("train", split.train), ("test", split.test)):
        if idx.ndim != 1 or idx.dtype != torch.int64:
            raise ValueError(f"{path}: split.{name} is {idx.dtype} {tuple(idx.shape)}, not a 1-D int64 tensor of indices")
    covered = len(split.train) + len(split.test)
    if covered != n:
        raise ValueError(f"{path}: its split covers {covered} examples, but its config's task has {n}")
    both = torch.cat([split.train, split.test])
    if covered and (int(both.min()) < 0 or int(both.max()) >= limit):
        raise ValueError(f"{path}: its split holds index {int(both.min()) if int(both.min()) < 0 else int(both.max())}, "
                         f"outside 0..{limit - 1}; the file is damaged or was edited")
    if len(torch.unique(both)) != covered:
        raise ValueError(f"{path}: its split holds {covered - len(torch.unique(both))} repeated indices (in train, test "
                         "or both); the file is damaged or was edited")


# --------------------------------------------------------------------------- what a model was trained on
@dataclass(frozen=True)
class RunInfo:
    """What a model was trained on: its config, task and split."""

    config: Config
    task: Task
    split: Split


_ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def attach(model: torch.nn.Module, cfg: Config, split: Split) -> RunInfo:
    """Record that ``model`` was trained on ``cfg``'s task with ``split`` (no attribute is set on it).

    ``load_run``, ``load_checkpoint``, ``train`` and ``build_model(cfg, split=...)`` do this, so
    analyses called with the bare model (``ablate_frequencies(model, ks)``) find its task and
    split. The record lives as long as the model.
    """
    info = RunInfo(config=cfg, task=build_task(cfg), split=split)
    _ATTACHED[model] = info
    return info


def attached(model: object) -> RunInfo:
    """The task, split and config of a model (or of a :class:`Run`), or a clear error if unknown."""
    if isinstance(model, Run):
        return RunInfo(config=model.config, task=model.task, split=model.split)
    info = _ATTACHED.get(model) if isinstance(model, torch.nn.Module) else None
    if info is None:
        raise ValueError(
            "mechgrok does not know what this model was trained on; load it with mechgrok.load_run / "
            "load_checkpoint (and pass run.model or the run), build it with build_model(cfg, split=...), "
            "or call mechgrok.runs.attach(model, cfg, split) on a model you made yourself"
        )
    return info


def run_info(model: object) -> RunInfo:
    """Deprecated: use :func:`attached` (or pass the :class:`Run` itself)."""
    warnings.warn("mechgrok.run_info is deprecated; use mechgrok.runs.attached(model) or pass the Run",
                  DeprecationWarning, stacklevel=2)
    return attached(model)


# --------------------------------------------------------------------------- loading models
@dataclass
class Run:
    """A loaded run: its model at some epoch, plus its task, split, config and metrics."""

    path: Path | None
    config: Config
    split: Split
    model: HookedTransformer
    epoch: int
    metrics: pd.DataFrame | None = None
    checkpoint_epochs: list[int] = field(default_factory=list)
    source_format: str = "mechgrok"
    source: Path | None = None  # the foreign file a foreign run was read from

    def __post_init__(self) -> None:
        attach(self.model, self.config, self.split)

    @property
    def task(self) -> Task:
        return build_task(self.config)

    def load_epoch(self, epoch: int) -> HookedTransformer:
        """A new model at a saved epoch of this run (one of ``checkpoint_epochs``).

        A run folder reads only that checkpoint file. A foreign file is read again and only that
        epoch is converted; to visit many epochs use :meth:`iter_checkpoints`, which reads it once.
        """
        where = self.path if self.path is not None else self.source
        if where is None or epoch not in self.checkpoint_epochs:
            raise ValueError(
                f"epoch {epoch} was not saved{f' in {where}' if where else ''}; "
                f"saved epochs are {_epochs_summary(self.checkpoint_epochs)}"
            )
        if self.path is None:
            from mechgrok.formats import read_foreign_epoch

            return self._foreign_model(read_foreign_epoch(self.source, epoch))
        ckpt = read_checkpoint_file(checkpoint_path(self.path, epoch))
        return model_from_state(ckpt.config, ckpt.model_state, ckpt.split)

    def iter_checkpoints(self) -> Iterator[tuple[int, HookedTransformer]]:
        """(epoch, model) for every saved epoch, oldest first; one model is built at a time."""
        if self.path is None and self.source is not None:
            from mechgrok.formats import iter_foreign_checkpoints

            for epoch, state in iter_foreign_checkpoints(self.source):
                yield epoch, self._foreign_model(state)
            return
        for epoch in self.checkpoint_epochs:
            yield epoch, self.load_epoch(epoch)

    def _foreign_model(self, state: dict[str, Tensor]) -> HookedTransformer:
        # the unembed keeps the width this run's own model was loaded with (load_checkpoint)
        return model_from_state(self.config, state, self.split, self.model.cfg.d_vocab_out)


def _epochs_summary(epochs: list[int]) -> str:
    if not epochs:
        return "none"
    return f"{epochs[0]}, {epochs[1]}, ..., {epochs[-1]}" if len(epochs) > 3 else ", ".join(map(str, epochs))


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch={epoch!r} must be a whole number >= 0 (a saved epoch, e.g. epoch=100)")
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch_{epoch:06d}.safetensors"


def checkpoint_epochs(run_dir: Path) -> list[int]:
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    epochs = []
    for f in folder.glob("epoch_*.safetensors"):
        try:
            epochs.append(int(f.stem.removeprefix("epoch_")))
        except ValueError:
            continue
    return sorted(epochs)


def _new_model(cfg: Config, d_vocab_out: int | None = None) -> torch.nn.Module:
    if cfg.family == "transformer":
        from mechgrok.models.transformer import build_model

        return build_model(cfg, d_vocab_out=d_vocab_out)
    from mechgrok import registry

    if d_vocab_out is not None:
        raise ValueError(f"d_vocab_out applies to the transformer family only, not {cfg.family!r}")
    return registry.family(cfg.family).build(cfg)


def model_from_state(cfg: Config, state: dict[str, Tensor], split: Split, d_vocab_out: int | None = None,
                     *, model: torch.nn.Module | None = None) -> torch.nn.Module:
    """A model of ``cfg``'s family holding the weights ``state``, attached to its task and split
    (``model``: a new model of ``cfg`` to fill, e.g. one whose parameters ``state`` was read into)."""
    model = _new_model(cfg, d_vocab_out) if model is None else model
    attach(model, cfg, split)
    expected = set(state_tensors(model))
    if set(state) != expected:
        raise ValueError(
            f"checkpoint weights do not match the model: missing {sorted(expected - set(state))}, "
            f"unexpected {sorted(set(state) - expected)}"
        )
    for name, tensor in model.state_dict().items():
        if name in state and tuple(state[name].shape) != tuple(tensor.shape):
            raise ValueError(f"checkpoint weight {name} has shape {tuple(state[name].shape)}, the model needs {tuple(tensor.shape)}")
        if name in state and state[name].dtype not in (torch.float32, torch.float64):
            # load_state_dict would cast it silently; a float16 or integer W_E is not a trained model's
            raise ValueError(f"checkpoint weight {name} is {state[name].dtype}; mechgrok reads float32 or float64 weights "
                             f"(the model's are {tensor.dtype})")
    model.load_state_dict(state, strict=False)
    return model


def load_checkpoint(path: str | Path, *, p: int | None = None) -> Run:
    """Load one checkpoint: a mechgrok ``.safetensors`` file, a run folder (its newest epoch),
    or one of the foreign ``.pth`` formats (the TransformerLens grokking demo, the original
    paper's ``full_run_data.pth``). Returns a :class:`Run` with a ready ``HookedTransformer``.

    A foreign file's run is at its final weights (``run.epoch`` is their number in the file's
    own numbering, :attr:`mechgrok.formats.ForeignRun.final_epoch`), keeps the unembed as wide
    as the file has it, and ``run.load_epoch(e)`` / ``run.iter_checkpoints()`` give every epoch
    the file holds. ``mechgrok.formats.import_run`` turns such a file into a run folder.

    ``p``, if given, must match the checkpoint's modulus.
    """
    path = Path(path)
    if path.is_dir():
        return load_run(path, p=p)
    if path.suffix in (".pth", ".pt"):
        from mechgrok.formats import read_foreign

        foreign = read_foreign(path)
        _check_p(path, foreign.config.p, p)
        model = model_from_state(foreign.config, foreign.state_dict, foreign.split, foreign.d_vocab_out)
        return Run(
            path=None,
            config=foreign.config,
            split=foreign.split,
            model=model,
            epoch=foreign.final_epoch,
            metrics=foreign.metrics,
            checkpoint_epochs=foreign.epochs,
            source_format=foreign.format,
            source=path,
        )
    # The model is built first and the file's weights are read straight into its parameters, so
    # loading holds them once (plus the model's initialisation while it is built).
    model = _new_model(_checkpoint_header(Path(path))[0])
    ckpt = read_checkpoint_file(path, into={f"model.{k}": v for k, v in state_tensors(model).items()})
    _check_p(path, ckpt.config.p, p)
    try:
        model = model_from_state(ckpt.config, ckpt.model_state, ckpt.split, model=model)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    run_dir = path.parent.parent if path.parent.name == CHECKPOINT_DIR else None
    return Run(
        path=run_dir,
        config=ckpt.config,
        split=ckpt.split,
        model=model,
        epoch=ckpt.epoch,
        metrics=read_metrics(run_dir) if run_dir else None,
        checkpoint_epochs=checkpoint_epochs(run_dir) if run_dir else [],
    )


def _check_p(path: Path, found: int, expected: int | None) -> None:
    if expected is not None and found != expected:
        raise ValueError(f"{path} holds a model for p={found}, not p={expected}; pass p={found} or load the right file")


def load_run(path: str | Path, *, epoch: int | None = None, p: int | None = None) -> Run:
    """Load a run folder at ``epoch`` (default: the newest saved epoch)."""
    path = Path(path)
    if not (path / CONFIG_FILE).exists():
        raise ValueError(f"{path} is not a mechgrok run folder (no {CONFIG_FILE}); train one with `mechgrok train --out {path}`")
    read_config(path)  # a damaged config.json is reported as such, not as "no checkpoints"
    epochs = checkpoint_epochs(path)
    if not epochs:
        raise ValueError(f"{path} has no checkpoints yet; train it with `mechgrok train --out {path}`")
    epoch = epochs[-1] if epoch is None else epoch
    where = checkpoint_path(path, epoch)  # a non-integer epoch is refused here, by name
    if epoch not in epochs:
        raise ValueError(f"{path} has no checkpoint at epoch {epoch}; saved epochs are {_epochs_summary(epochs)}")
    return load_checkpoint(where, p=p)


# --------------------------------------------------------------------------- run folder pieces
def write_config(run_dir: Path, cfg: Config) -> None:
    payload = {"format": "mechgrok", "schema_version": SCHEMA_VERSION, "config": cfg.to_dict()}
    atomic_write_text(Path(run_dir) / CONFIG_FILE, json.dumps(payload, indent=2) + "\n")


def read_config(run_dir: Path) -> Config:
    """A run's config: every field of its schema must be there (none is filled with a default)."""
    path = Path(run_dir) / CONFIG_FILE
    restore = (f"restore it (every checkpoint's metadata holds the config: "
               f"mechgrok.runs.write_config(RUN, read_checkpoint_file(CHECKPOINT).config)) or use another folder")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); {restore}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path} holds a JSON {type(payload).__name__}, not a mechgrok config object; {restore}")
    if payload.get("format") != "mechgrok":
        raise ValueError(f"{path} has format {payload.get('format')!r}, not 'mechgrok'; it is not a mechgrok config")
    version = schema_version(path, payload.get("schema_version"), "JSON")
    if "config" not in payload:
        raise ValueError(f"{path} has no 'config' field; {restore}")
    try:
        return Config.from_dict(payload["config"], schema_version=version)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from None


def cross_check_config(path: Path, cfg: Config, saved: Config) -> None:
    """Raise ``ValueError`` if the config a file ``path`` records differs from the run's ``saved``
    ``config.json`` in a field other than the schedule fields a resumed run may change."""
    from mechgrok.training.loop import RESUMABLE_CHANGES

    differs = {f: (getattr(saved, f), getattr(cfg, f)) for f in cfg.to_dict()
               if f not in RESUMABLE_CHANGES and getattr(saved, f) != getattr(cfg, f)}
    if differs:
        detail = ", ".join(f"{f}: {CONFIG_FILE} {a!r}, the file {b!r}" for f, (a, b) in differs.items())
        raise ValueError(f"{path} records another config than its run's {CONFIG_FILE} ({detail}): it is from another "
                         "run, or one of the two files was edited")


def write_split(run_dir: Path, split: Split) -> None:
    data = tensorfile.tensors_to_bytes({"train": split.train, "test": split.test}, {"format": "mechgrok"})
    atomic_write_bytes(Path(run_dir) / SPLIT_FILE, data)


def read_split(run_dir: Path) -> Split:
    path = Path(run_dir) / SPLIT_FILE
    _check_exists(path)
    try:
        tensors, _ = tensorfile.read_tensors(path)
    except tensorfile.DamagedFile as err:
        raise ValueError(f"{err}; every checkpoint of the run carries its split too") from None
    missing = [name for name in ("train", "test") if name not in tensors]
    if missing:
        raise ValueError(f"{path} has no tensor {missing[0]!r}; it is not a mechgrok split file")
    return Split(train=tensors["train"], test=tensors["test"])


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=METRIC_COLUMNS).to_csv(buffer, index=False)
    atomic_write_text(Path(run_dir) / METRICS_FILE, buffer.getvalue())


def imported_from(run_dir: Path) -> dict | None:
    """What ``mechgrok import`` recorded about a run's foreign source file, or None for a run
    that mechgrok trained."""
    path = Path(run_dir) / IMPORT_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-import the run into a new folder") from None


def read_metrics(run_dir: Path | None) -> pd.DataFrame | None:
    """A run's ``metrics.csv`` (None if it has none), its columns checked: ``METRIC_COLUMNS``
    present, ``epoch`` whole numbers, the rest numbers (NaN allowed: an imported run has no times)."""
    if run_dir is None or not (Path(run_dir) / METRICS_FILE).exists():
        return None
    path = Path(run_dir) / METRICS_FILE
    fix = "restore it from a copy; the run's checkpoints are intact"
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty (not even its header {','.join(METRIC_COLUMNS)}); {fix}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable CSV file ({_first_line(err)}); {fix}") from None
    missing = [c for c in METRIC_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; it has {list(frame.columns)}, and a run's metrics have "
                         f"{METRIC_COLUMNS}; {fix}")
    for column in METRIC_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if column == "epoch":
            bad |= values.isna() | (values % 1 != 0) | (values < 0)
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise ValueError(f"{path}: column {column!r} holds {frame[column].iloc[row]!r} on data row {row + 1}, not "
                             f"{'a whole number >= 0' if column == 'epoch' else 'a number'}; {fix}")
        frame[column] = values.astype("int64") if column == "epoch" else values.astype("float64")
    return frame


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]



# --------------------------------------------------------------------------- one trainer per folder
@contextmanager
def lock_run_folder(run_dir: Path) -> Iterator[Path]:
    """Hold an exclusive lock on the run folder ``run_dir`` (created if absent) while training it.

    The lock is ``flock`` on the folder itself, so no file is added to it; it is released when
    the trainer returns or dies (the kernel drops it with the process). A second trainer on the
    same folder gets a ``ValueError`` naming the folder at once, before it reads or writes
    anything, so two trainers never interleave their writes.
    """
    run_dir = Path(run_dir)
    if str(run_dir) == "":
        raise ValueError("the run folder is the empty string; pass a folder, e.g. --out runs/my-run")
    if run_dir.is_symlink() and not run_dir.exists():
        raise ValueError(f"{run_dir} is a symlink to {os.readlink(run_dir)}, which does not exist (or leads back to "
                         "itself); pass a real folder")
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir} exists and is not a folder; pass a folder (a new one, or a run's)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise ValueError(f"cannot open the run folder {run_dir} ({err.strerror}); pass a folder you can write") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another trainer holds {run_dir} (it is training it now); wait for it to finish or stop "
                             "it, then run again: the run resumes where it stopped") from None
        yield run_dir
    finally:
        os.close(fd)  # releases the lock


def clear_unfinished_writes(run_dir: Path) -> list[Path]:
    """Remove the temporary files of mechgrok's own atomic writes that a kill left in ``run_dir``
    (``.config.json.<random>.tmp``, ``checkpoints/.epoch_000100.safetensors.<random>.tmp``, ...);
    the file each was to replace is intact. Only names of the trainer's own files are touched;
    call it while holding :func:`lock_run_folder`. Returns what was removed."""
    run_dir = Path(run_dir)
    removed = []
    for folder, names in ((run_dir, RUN_FILES), (run_dir / CHECKPOINT_DIR, ("epoch_",))):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if is_unfinished_write(entry.name, names) and entry.is_file() and not entry.is_symlink():
                entry.unlink()
                removed.append(entry)
    return removed


def is_unfinished_write(name: str, files: tuple[str, ...] = RUN_FILES + ("epoch_",)) -> bool:
    """Whether ``name`` is a temporary name :func:`atomic_write_bytes` gives one of ``files``."""
    return name.startswith(".") and name.endswith(TMP_SUFFIX) and any(name[1:].startswith(f) for f in files)


# Out of room: the fix is to free space, and the run goes on from its resume file.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def write_error(err: OSError, run_dir: Path, resume_epoch: int | None) -> ValueError:
    """The error to raise when a trainer's write into ``run_dir`` failed with ``err``: it names
    the file and says what re-running does (every file on disk is whole: writes are atomic)."""
    where = err.filename or run_dir
    again = f"it resumes from epoch {resume_epoch}" if resume_epoch is not None else "it starts the run afresh"
    if err.errno in _NO_ROOM:
        fix = f"free space (or raise the file-size limit) and re-run the same command: {again}"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = f"make {run_dir} writable and re-run the same command ({again}), or pass another --out"
    else:
        fix = f"fix that and re-run the same command: {again}"
    return ValueError(f"could not write {where} ({err.strerror or err}); every file already in {run_dir} is intact; {fix}")
