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
from safetensors import SafetensorError
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes
from torch import Tensor

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


# --------------------------------------------------------------------------- atomic writes
def _current_umask() -> int:
    """The process umask, read now (a umask can only be read by setting it, so it is set back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes files private; run files are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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
    return {name: t.detach().contiguous() for name, t in model.state_dict().items() if not _is_buffer_name(name)}


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
    """Write a self-contained checkpoint (weights, split, config; optionally optimizer state)."""
    tensors = {f"model.{k}": v for k, v in state_tensors(model).items()}
    tensors["split.train"] = split.train.contiguous()
    tensors["split.test"] = split.test.contiguous()
    kind = "checkpoint"
    if optimizer_state is not None:
        kind = "resume"
        tensors.update({f"optim.{k}": v.contiguous() for k, v in optimizer_state.items()})
    atomic_write_bytes(Path(path), st_save_bytes(tensors, metadata=_metadata(kind, cfg, epoch, extra)))


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


def read_checkpoint_file(path: Path) -> CheckpointFile:
    path = Path(path)
    data = _read_bytes(path)
    try:
        tensors = st_load_bytes(data)
        metadata = _safetensors_metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} is not a readable mechgrok checkpoint ({err}); the file is truncated or of another format. "
            "If an interrupted run left it, re-run the training command: it resumes from the newest intact checkpoint."
        ) from None
    if metadata.get("format") != "mechgrok":
        raise ValueError(f"{path} is a safetensors file but not a mechgrok checkpoint (no 'format: mechgrok' metadata)")
    try:
        version = int(metadata.get("schema_version", "-1"))
    except ValueError:
        version = -1
    if version not in READABLE_SCHEMAS:
        raise ValueError(
            f"{path} has checkpoint schema version {version}, but this mechgrok reads versions {READABLE_SCHEMAS}; "
            "use the mechgrok release that wrote it"
        )
    try:
        cfg = Config.from_dict(json.loads(metadata["config"]), schema_version=version)
    except (KeyError, json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path}: its metadata holds no readable config ({err!r}); the file is damaged") from None
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    model_state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    optim = {k.removeprefix("optim."): v for k, v in tensors.items() if k.startswith("optim.")}
    split = Split(train=tensors["split.train"], test=tensors["split.test"])
    ckpt = CheckpointFile(path, cfg, int(metadata["epoch"]), metadata["kind"], model_state, split, optim, metadata)
    _check_consistent(ckpt)
    return ckpt


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; pass a run folder, a mechgrok .safetensors checkpoint, or a foreign .pth file"
        )
    return path.read_bytes()


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    # safetensors layout: 8-byte little-endian header length, then a JSON header
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    return header.get("__metadata__", {})


def _check_consistent(ckpt: CheckpointFile) -> None:
    cfg, state = ckpt.config, ckpt.model_state
    W_E = state.get("embed.W_E")
    if cfg.family == "transformer" and (W_E is None or tuple(W_E.shape) != (cfg.d_vocab, cfg.d_model)):
        shape = None if W_E is None else tuple(W_E.shape)
        raise ValueError(
            f"{ckpt.path}: its config says p={cfg.p}, d_model={cfg.d_model}, so W_E should be "
            f"{(cfg.d_vocab, cfg.d_model)}, but it is {shape}; the file is damaged or was edited"
        )
    n = n_examples(cfg)
    covered = len(ckpt.split.train) + len(ckpt.split.test)
    if cfg.task == "modular" and cfg.pairs == "unordered":
        n = cfg.p * (cfg.p + 1) // 2  # a split of the pairs a <= b only
    if covered != n:
        raise ValueError(f"{ckpt.path}: its split covers {covered} examples, but its config's task has {n}")


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


def model_from_state(cfg: Config, state: dict[str, Tensor], split: Split, d_vocab_out: int | None = None) -> torch.nn.Module:
    """A model of ``cfg``'s family holding the weights ``state``, attached to its task and split."""
    if cfg.family == "transformer":
        from mechgrok.models.transformer import build_model

        model = build_model(cfg, d_vocab_out=d_vocab_out, split=split)
    else:
        from mechgrok import registry

        if d_vocab_out is not None:
            raise ValueError(f"d_vocab_out applies to the transformer family only, not {cfg.family!r}")
        model = registry.family(cfg.family).build(cfg)
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
    ckpt = read_checkpoint_file(path)
    _check_p(path, ckpt.config.p, p)
    model = model_from_state(ckpt.config, ckpt.model_state, ckpt.split)
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
    if epoch not in epochs:
        raise ValueError(f"{path} has no checkpoint at epoch {epoch}; saved epochs are {_epochs_summary(epochs)}")
    return load_checkpoint(checkpoint_path(path, epoch), p=p)


# --------------------------------------------------------------------------- run folder pieces
def write_config(run_dir: Path, cfg: Config) -> None:
    payload = {"format": "mechgrok", "schema_version": SCHEMA_VERSION, "config": cfg.to_dict()}
    atomic_write_text(Path(run_dir) / CONFIG_FILE, json.dumps(payload, indent=2) + "\n")


def read_config(run_dir: Path) -> Config:
    path = Path(run_dir) / CONFIG_FILE
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore it or start a new run folder") from None
    if not isinstance(payload, dict) or payload.get("format") != "mechgrok" or payload.get("schema_version") not in READABLE_SCHEMAS:
        raise ValueError(f"{path} is not a mechgrok config of a schema version this mechgrok reads {READABLE_SCHEMAS}")
    try:
        return Config.from_dict(payload.get("config"), schema_version=payload["schema_version"])
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def write_split(run_dir: Path, split: Split) -> None:
    data = st_save_bytes({"train": split.train.contiguous(), "test": split.test.contiguous()}, metadata={"format": "mechgrok"})
    atomic_write_bytes(Path(run_dir) / SPLIT_FILE, data)


def read_split(run_dir: Path) -> Split:
    tensors = st_load_bytes(_read_bytes(Path(run_dir) / SPLIT_FILE))
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
    if run_dir is None or not (Path(run_dir) / METRICS_FILE).exists():
        return None
    return pd.read_csv(Path(run_dir) / METRICS_FILE)
