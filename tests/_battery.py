"""A battery of hostile inputs (issue 10): edited, damaged, foreign and bomb files, bad flags and
paths. ``tests/test_hostile_files.py`` requires every case to end in a clear error;
``/work/notes/battery.py`` runs the same cases against any checkout and counts the outcomes.

Each case builds its input under a fresh folder and returns a :class:`Case`: the action (a
library call, or a CLI argv), the words a clear error must contain (the file or field it is
about), and the folder whose files must be left exactly as they were. :func:`classify` runs it:

* ``clear``: a ``ValueError`` / ``FileNotFoundError`` (or CLI exit 2) naming what it must name;
* ``unclear``: refused, but the message does not name it;
* ``crash``: another exception, a traceback exit, a MemoryError, or over the time limit;
* ``accepted``: no error at all, for an input that must be refused;
* ``lost``: a file of the guarded folder changed.

Bombs are built small, with mechgrok's size caps set low while a case runs (:func:`low_caps`),
so that they are refused in milliseconds; the same cases against code without the checks are
accepted (or, at the issue's full sizes, exhaust memory).
"""

from __future__ import annotations

import contextlib
import copyreg
import errno
import io
import json
import os
import shutil
import struct
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mechgrok import runs
from mechgrok.config import Config

CFG = Config(p=7, frac_train=0.5, d_model=32, d_mlp=64, n_heads=4, epochs=20, eval_every=5, checkpoint_every=10, seed=0)
CLI_CFG = ["--p", "7", "--frac-train", "0.5", "--d-model", "32", "--d-mlp", "64", "--n-heads", "4",
           "--eval-every", "5", "--checkpoint-every", "10", "--no-progress"]


@dataclass
class Case:
    action: Callable[[], object] | list[str]  # a call, or argv for mechgrok.cli.main
    expect: list[str]  # what a clear error names
    guard: Path | None = None  # a folder that must be left as it was
    skip_guard: tuple[str, ...] = ()  # files in it the case itself damaged
    refuse: bool = True  # False: the input must be accepted (a control)


@dataclass
class Outcome:
    name: str
    kind: str
    message: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- the run the cases edit
_TRAINED: dict[tuple, Path] = {}


def trained(root: Path, cfg: Config = CFG) -> Path:
    """A copy under ``root`` of a small trained run of ``cfg`` (trained once per process)."""
    from mechgrok.training.loop import train

    key = tuple(sorted(cfg.to_dict().items()))
    if key not in _TRAINED:
        import tempfile

        src = Path(tempfile.mkdtemp(prefix="mechgrok-battery-")) / "run"
        train(cfg, src, tune_process=False, threads=1)
        _TRAINED[key] = src
    dst = root / "run"
    shutil.copytree(_TRAINED[key], dst)
    return dst


def metadata_of(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def rewrite(path: Path, *, tensors: Callable[[dict], dict] | None = None, metadata: Callable[[dict], dict] | None = None,
            fresh_checksum: bool = True) -> None:
    """Edit a safetensors file as a person with the safetensors library would; with ``fresh_checksum``
    its mechgrok checksum is recomputed, so only mechgrok's other checks can catch the edit."""
    data, meta = load_file(str(path)), metadata_of(path)
    data = tensors(data) if tensors else data
    meta = metadata(meta) if metadata else meta
    if fresh_checksum and "sha256" in meta:
        from mechgrok.tensorfile import checksum

        meta["sha256"] = checksum(data)
    save_file({k: v.contiguous() for k, v in data.items()}, str(path), metadata=meta)


def flip_byte(path: Path, from_end: int = 5) -> None:
    blob = bytearray(path.read_bytes())
    blob[-from_end] ^= 0x10
    path.write_bytes(bytes(blob))


def edit_config(run: Path, change: Callable[[dict], object]) -> None:
    path = run / runs.CONFIG_FILE
    payload = json.loads(path.read_text())
    payload = change(payload)
    path.write_text(json.dumps(payload))


def _drop_config_field(name: str):
    def change(payload):
        del payload["config"][name]
        return payload
    return change


@contextlib.contextmanager
def low_caps():
    """mechgrok's size caps set low, where this checkout has them (tensorfile, torchfile)."""
    saved = []
    for module, attr, value in (("mechgrok.tensorfile", "MAX_FILE_BYTES", 1 << 20), ("mechgrok.torchfile", "MAX_BYTES", 64 << 20),
                                ("mechgrok.torchfile", "MAX_LIST_LENGTH", 100_000), ("mechgrok.formats", "MAX_P", 1000)):
        try:
            mod = __import__(module, fromlist=[attr])
        except ImportError:
            continue
        if hasattr(mod, attr):
            saved.append((mod, attr, getattr(mod, attr)))
            setattr(mod, attr, value)
    try:
        yield
    finally:
        for mod, attr, value in saved:
            setattr(mod, attr, value)


# ----------------------------------------------------------------------------- resume-file attacks
def _train_on(run: Path, epochs: int = 30):
    from mechgrok.training.loop import train

    return lambda: train(CFG.replace(epochs=epochs), run, tune_process=False, threads=1)


def case_resume_nan_weights(tmp: Path) -> Case:
    run = trained(tmp)
    rewrite(run / runs.RESUME_FILE, tensors=lambda t: {**t, "model.embed.W_E": t["model.embed.W_E"].index_fill(0, torch.tensor([2]), float("nan"))})
    return Case(_train_on(run), [runs.RESUME_FILE, "non-finite"], run, (runs.RESUME_FILE,))


def case_resume_from_another_run(tmp: Path) -> Case:
    run = trained(tmp)
    other = trained(tmp / "other", CFG.replace(seed=1))
    shutil.copy(other / runs.RESUME_FILE, run / runs.RESUME_FILE)
    return Case(_train_on(run), [runs.RESUME_FILE, "seed"], run, (runs.RESUME_FILE,))


def case_resume_epoch_edited(tmp: Path) -> Case:
    run = trained(tmp)
    rewrite(run / runs.RESUME_FILE, metadata=lambda m: {**m, "epoch": "15"})
    return Case(_train_on(run), [runs.RESUME_FILE, "epoch 15"], run, (runs.RESUME_FILE,))


def case_resume_weights_edited(tmp: Path) -> Case:
    run = trained(tmp)
    rewrite(run / runs.RESUME_FILE, tensors=lambda t: {**t, "model.unembed.W_U": t["model.unembed.W_U"] * 1.01})
    return Case(_train_on(run), [runs.RESUME_FILE, "epoch_000020"], run, (runs.RESUME_FILE,))


def case_resume_truncated(tmp: Path) -> Case:
    run = trained(tmp)
    blob = (run / runs.RESUME_FILE).read_bytes()
    (run / runs.RESUME_FILE).write_bytes(blob[: len(blob) // 2])
    return Case(_train_on(run), [runs.RESUME_FILE, "truncated", "cannot be resumed exactly"], run, (runs.RESUME_FILE,))


def case_resume_byte_flipped(tmp: Path) -> Case:
    run = trained(tmp)
    flip_byte(run / runs.RESUME_FILE)
    return Case(_train_on(run), [runs.RESUME_FILE, "checksum"], run, (runs.RESUME_FILE,))


def case_resume_is_a_plain_checkpoint(tmp: Path) -> Case:
    run = trained(tmp)
    shutil.copy(runs.checkpoint_path(run, 20), run / runs.RESUME_FILE)
    return Case(_train_on(run), [runs.RESUME_FILE, "not a resume file"], run, (runs.RESUME_FILE,))


def case_config_disagrees_with_resume(tmp: Path) -> Case:
    run = trained(tmp)
    edit_config(run, lambda p: {**p, "config": {**p["config"], "weight_decay": 0.5}})
    from mechgrok.training.loop import train

    return Case(lambda: train(CFG.replace(weight_decay=0.5, epochs=30), run, tune_process=False),
                [runs.RESUME_FILE, "weight_decay"], run, (runs.CONFIG_FILE,))


# ----------------------------------------------------------------------------- config.json edits
def case_config_field_missing(tmp: Path) -> Case:
    run = trained(tmp)
    edit_config(run, _drop_config_field("weight_decay"))
    return Case(["train", *CLI_CFG, "--epochs", "30", "--out", str(run)], [runs.CONFIG_FILE, "weight_decay"], run,
                (runs.CONFIG_FILE,))


def case_config_lr_missing(tmp: Path) -> Case:
    run = trained(tmp)
    edit_config(run, _drop_config_field("lr"))
    case = Case(["train", "--lr", "0.002", "--epochs", "30", "--out", str(run)], [runs.CONFIG_FILE, "'lr'"], run, (runs.CONFIG_FILE,))
    case.forbid = ["saved 0.001"]
    return case


def case_config_json_list(tmp: Path) -> Case:
    run = trained(tmp)
    edit_config(run, lambda p: [p])
    return Case(["info", str(run)], [runs.CONFIG_FILE, "list"], run, (runs.CONFIG_FILE,))


def case_config_null(tmp: Path) -> Case:
    run = trained(tmp)
    edit_config(run, lambda p: {**p, "config": None})
    return Case(["train", "--out", str(run)], [runs.CONFIG_FILE, "JSON object"], run, (runs.CONFIG_FILE,))


def case_config_future_schema(tmp: Path) -> Case:
    run = trained(tmp)
    edit_config(run, lambda p: {**p, "schema_version": 9})
    return Case(["info", str(run)], [runs.CONFIG_FILE, "schema version 9", "newer"], run, (runs.CONFIG_FILE,))


def case_config_schema_key_flipped(tmp: Path) -> Case:
    run = trained(tmp)
    edit_config(run, lambda p: {("schema_versioo" if k == "schema_version" else k): v for k, v in p.items()})
    case = Case(["info", str(run)], [runs.CONFIG_FILE, "no 'schema_version'"], run, (runs.CONFIG_FILE,))
    case.forbid = ["version -1", "release that wrote it"]
    return case


def case_config_deleted(tmp: Path) -> Case:
    run = trained(tmp)
    (run / runs.CONFIG_FILE).unlink()
    case = Case(["train", *CLI_CFG, "--epochs", "30", "--out", str(run)], [str(run), "no config.json", "write_config"], run)
    case.forbid = ["empty it"]
    return case


def case_config_not_json(tmp: Path) -> Case:
    run = trained(tmp)
    (run / runs.CONFIG_FILE).write_bytes(b"\xff\xfe{")
    return Case(["info", str(run)], [runs.CONFIG_FILE, "not valid JSON"], run, (runs.CONFIG_FILE,))


# ----------------------------------------------------------------------------- checkpoint edits
def _ckpt_case(tmp: Path, expect: list[str], **edit) -> Case:
    run = trained(tmp)
    path = runs.checkpoint_path(run, 10)
    rewrite(path, **edit)
    return Case(lambda: runs.load_checkpoint(path), [path.name, *expect], run, (f"{runs.CHECKPOINT_DIR}/{path.name}",))


def _without(key):
    return lambda m: {k: v for k, v in m.items() if k != key}


def case_ckpt_no_config(tmp): return _ckpt_case(tmp, ["'config'"], metadata=_without("config"))
def case_ckpt_no_epoch(tmp): return _ckpt_case(tmp, ["'epoch'"], metadata=_without("epoch"))
def case_ckpt_config_null(tmp): return _ckpt_case(tmp, ["config", "JSON object"], metadata=lambda m: {**m, "config": "null"})
def case_ckpt_epoch_float(tmp): return _ckpt_case(tmp, ["'epoch'", "10.0"], metadata=lambda m: {**m, "epoch": "10.0"})
def case_ckpt_no_split_train(tmp): return _ckpt_case(tmp, ["split.train"], tensors=lambda t: {k: v for k, v in t.items() if k != "split.train"})
def case_ckpt_kind_edited(tmp): return _ckpt_case(tmp, ["'kind'"], metadata=lambda m: {**m, "kind": "weights"})


def _split_edit(fn):
    def tensors(t):
        train = t["split.train"].clone()
        fn(train)
        return {**t, "split.train": train}
    return tensors


def case_ckpt_split_out_of_range(tmp): return _ckpt_case(tmp, ["outside"], tensors=_split_edit(lambda s: s.__setitem__(0, 49)))
def case_ckpt_split_minus_one(tmp): return _ckpt_case(tmp, ["-1", "outside"], tensors=_split_edit(lambda s: s.__setitem__(0, -1)))
def case_ckpt_split_duplicated(tmp): return _ckpt_case(tmp, ["repeated"], tensors=_split_edit(lambda s: s.__setitem__(1, int(s[0]))))
def case_ckpt_W_E_float16(tmp): return _ckpt_case(tmp, ["float16"], tensors=lambda t: {**t, "model.embed.W_E": t["model.embed.W_E"].half()})
def case_ckpt_W_E_int(tmp): return _ckpt_case(tmp, ["int64"], tensors=lambda t: {**t, "model.embed.W_E": t["model.embed.W_E"].long()})
def case_ckpt_W_E_bool(tmp): return _ckpt_case(tmp, ["bool"], tensors=lambda t: {**t, "model.embed.W_E": t["model.embed.W_E"] > 0})


def case_ckpt_byte_flipped(tmp: Path) -> Case:
    run = trained(tmp)
    path = runs.checkpoint_path(run, 10)
    flip_byte(path, from_end=64)  # inside the last tensor's data
    return Case(lambda: runs.load_checkpoint(path), [path.name, "checksum"], run, (f"{runs.CHECKPOINT_DIR}/{path.name}",))


def case_ckpt_header_bomb(tmp: Path) -> Case:
    path = tmp / "bomb.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    return Case(lambda: runs.load_checkpoint(path), ["bomb.safetensors", "header claims"])


def case_ckpt_huge_sparse(tmp: Path) -> Case:
    """A 2 GiB sparse file (its header is fine) over the cap: refused before its body is read."""
    path = tmp / "huge.safetensors"
    header = json.dumps({"__metadata__": {"format": "mechgrok"},
                         "x": {"dtype": "F32", "shape": [1 << 29], "data_offsets": [0, 1 << 31]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + (1 << 31))
    return Case(lambda: runs.load_checkpoint(path), ["huge.safetensors", "bytes"])


def case_ckpt_too_big_for_its_config(tmp: Path) -> Case:
    """A 2 GiB sparse file with a real checkpoint's metadata, under the default 4 GiB cap: its
    config's model is tiny, so it is refused from its header, before a byte of its body is read."""
    run = trained(tmp)
    meta = metadata_of(runs.checkpoint_path(run, 10))
    path = tmp / "huge.safetensors"
    header = json.dumps({"__metadata__": meta, "model.embed.W_E": {"dtype": "F32", "shape": [1 << 29],
                                                                "data_offsets": [0, 1 << 31]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + (1 << 31))

    def load():
        from mechgrok import tensorfile

        saved, tensorfile.MAX_FILE_BYTES = tensorfile.MAX_FILE_BYTES, 4 << 30
        try:
            return runs.load_checkpoint(path)
        finally:
            tensorfile.MAX_FILE_BYTES = saved

    return Case(load, ["huge.safetensors", "holds at most"])


def case_load_run_float_epoch(tmp: Path) -> Case:
    run = trained(tmp)
    return Case(lambda: runs.load_run(run, epoch=10.0), ["epoch=10.0"], run)


def case_split_file_edited(tmp: Path) -> Case:
    run = trained(tmp)
    rewrite(run / runs.SPLIT_FILE, tensors=lambda t: {**t, "train": t["train"][:-1]})
    return Case(_train_on(run), [runs.SPLIT_FILE], run, (runs.SPLIT_FILE,))


# ----------------------------------------------------------------------------- metrics.csv
def _metrics_case(tmp: Path, text: str | bytes, expect: list[str]) -> Case:
    run = trained(tmp)
    path = run / runs.METRICS_FILE
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return Case(["info", str(run)], [runs.METRICS_FILE, *expect], run, (runs.METRICS_FILE,))


def case_metrics_empty(tmp): return _metrics_case(tmp, "", ["empty"])
def case_metrics_epoch_text(tmp): return _metrics_case(tmp, "epoch,train_loss,train_acc,test_loss,test_acc,elapsed_s\nten,1,1,1,1,1\n", ["'epoch'", "ten"])
def case_metrics_column_renamed(tmp): return _metrics_case(tmp, "epoch,loss,train_acc,test_loss,test_acc,elapsed_s\n0,1,1,1,1,1\n", ["train_loss"])
def case_metrics_garbage(tmp): return _metrics_case(tmp, b"\x00\xff\xfe\x00garbage\n\"unterminated", ["metrics.csv"])


def case_metrics_is_a_folder(tmp: Path) -> Case:
    run = trained(tmp)
    (run / runs.METRICS_FILE).unlink()
    (run / runs.METRICS_FILE).mkdir()
    return Case(["info", str(run)], [runs.METRICS_FILE], run)


# ----------------------------------------------------------------------------- foreign .pth files
class _Reduce:
    """Pickles as ``func(*args)``: how a hostile file calls an allowlisted (or any) global."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _demo_file(path: Path, **overrides) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_formats import write_demo

    _, data = write_demo(path, 7, n_epochs=200, **overrides)
    return data


def _original_file(path: Path, p: int = 7, **overrides) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_formats import write_original

    write_original(path, p, p + 1, n_epochs=20, **overrides)


def _read(path: Path):
    from mechgrok.formats import read_foreign

    return lambda: read_foreign(path)


def case_pth_bytearray_bomb(tmp: Path) -> Case:
    path = tmp / "bomb.pth"
    _demo_file(path, extra=[_Reduce(bytearray, 1 << 30) for _ in range(3)])
    return Case(_read(path), ["bomb.pth", "bytearray"])


def case_pth_bytearray_losses(tmp: Path) -> Case:
    path = tmp / "bomb.pth"
    _demo_file(path, train_losses=_Reduce(bytearray, 1 << 31))
    return Case(_read(path), ["bomb.pth", "bytearray"])


def case_pth_stride0_losses(tmp: Path) -> Case:
    path = tmp / "bomb.pth"
    _demo_file(path, train_losses=torch.zeros(1, dtype=torch.float64).expand(50_000_000))
    return Case(_read(path), ["bomb.pth", "overlap"])


def case_pth_one_state_dict_many_times(tmp: Path) -> Case:
    path = tmp / "bomb.pth"
    sys.path.insert(0, str(Path(__file__).parent))
    from test_formats import original_config, original_weights

    sd = original_weights(8)
    torch.save({"model": sd, "config": original_config(7, num_epochs=2000), "state_dicts": [sd] * 2000,
                "epochs": list(range(2000)), "train_losses": [1.0] * 2000, "test_losses": [1.0] * 200}, path)
    return Case(_read(path), ["bomb.pth", "state dict"])


def case_pth_original_huge_p(tmp: Path) -> Case:
    path = tmp / "bomb.pth"
    sys.path.insert(0, str(Path(__file__).parent))
    from test_formats import original_config, original_weights

    torch.save({"model": original_weights(20012), "config": original_config(20011)}, path)
    return Case(_read(path), ["bomb.pth", "p=20011"])


def case_pth_stride0_weights(tmp: Path) -> Case:
    path = tmp / "bomb.pth"
    sys.path.insert(0, str(Path(__file__).parent))
    from test_formats import original_config, original_weights

    sd = original_weights(8)
    d_mlp = 1 << 25
    sd["blocks.0.mlp.W_in"] = torch.zeros(1).expand(d_mlp, 128)
    sd["blocks.0.mlp.b_in"] = torch.zeros(1).expand(d_mlp)
    sd["blocks.0.mlp.W_out"] = torch.zeros(1).expand(128, d_mlp)
    torch.save({"model": sd, "config": original_config(7)}, path)
    return Case(_read(path), ["bomb.pth", "overlap"])


def case_pth_meta_weights(tmp: Path) -> Case:
    path = tmp / "bomb.pth"
    sys.path.insert(0, str(Path(__file__).parent))
    from test_formats import original_config, original_weights

    sd = {k: torch.empty_like(v, device="meta") for k, v in original_weights(8).items()}
    torch.save({"model": sd, "config": original_config(7)}, path)
    return Case(_read(path), ["bomb.pth", "_rebuild_meta_tensor_no_storage"])


def case_pth_sparse_weights(tmp: Path) -> Case:
    path = tmp / "bomb.pth"
    sys.path.insert(0, str(Path(__file__).parent))
    from test_formats import original_config, original_weights

    sd = original_weights(8)
    sd["unembed.W_U"] = sd["unembed.W_U"].to_sparse()
    torch.save({"model": sd, "config": original_config(7)}, path)
    return Case(_read(path), ["bomb.pth", "sparse"])


def case_pth_compressed_zip(tmp: Path) -> Case:
    src, path = tmp / "plain.pth", tmp / "bomb.pth"
    _original_file(src)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    return Case(_read(path), ["bomb.pth", "compressed"])


def case_pth_legacy_bytearray(tmp: Path) -> Case:
    path = tmp / "bomb.pth"
    torch.save({"model": {}, "config": {"p": 7}, "x": _Reduce(bytearray, 1 << 30)}, path, _use_new_zipfile_serialization=False)
    return Case(_read(path), ["bomb.pth", "bytearray"])


def case_pth_legacy_storage_claims_too_much(tmp: Path) -> Case:
    """A legacy-format file whose storage record claims more bytes than follow it."""
    path = tmp / "bomb.pth"
    torch.save({"model": {"w": torch.zeros(1000)}, "config": {"p": 7}}, path, _use_new_zipfile_serialization=False)
    blob = path.read_bytes()
    path.write_bytes(blob[:-2000])
    return Case(_read(path), ["bomb.pth", "truncated"])


def _tl_config_class():
    from mechgrok.models.transformer import HookedTransformerConfig

    return HookedTransformerConfig


def case_pth_newobj_config_with_args(tmp: Path) -> Case:
    path = tmp / "bomb.pth"
    cls = _tl_config_class()
    obj = object.__new__(cls)
    obj.__reduce_ex__ = lambda protocol: (copyreg.__newobj__, (cls, "touch /tmp/pwned"))
    _demo_file(path, config=obj)
    return Case(_read(path), ["bomb.pth", "HookedTransformerConfig"])


def case_pth_newobj_config_no_state(tmp: Path) -> Case:
    path = tmp / "bomb.pth"
    cls = _tl_config_class()
    obj = object.__new__(cls)
    obj.__reduce_ex__ = lambda protocol: (copyreg.__newobj__, (cls,))
    _demo_file(path, config=obj)
    return Case(_read(path), ["bomb.pth", "HookedTransformerConfig"])


def case_pth_attn_scale_zero(tmp: Path) -> Case:
    path = tmp / "demo.pth"
    sys.path.insert(0, str(Path(__file__).parent))
    from test_formats import demo_model

    cfg = demo_model(7).cfg
    cfg.attn_scale = 0.0
    _demo_file(path, config=cfg)
    return Case(_read(path), ["demo.pth", "attention"])


def case_pth_W_E_float16(tmp: Path) -> Case:
    path = tmp / "demo.pth"
    sys.path.insert(0, str(Path(__file__).parent))
    from test_formats import demo_model

    sd = demo_model(7).state_dict()
    sd["embed.W_E"] = sd["embed.W_E"].half()
    _demo_file(path, model=sd)
    return Case(_read(path), ["demo.pth", "embed.W_E", "float16"])


def case_pth_demo_split_minus_one(tmp: Path) -> Case:
    path = tmp / "demo.pth"
    data = _demo_file(tmp / "src.pth")
    train = data["train_indices"].clone()
    train[0] = -1
    _demo_file(path, train_indices=train)
    return Case(_read(path), ["demo.pth", "train_indices"])


def case_pth_symlink_loop(tmp: Path) -> Case:
    a, b = tmp / "a.pth", tmp / "b.pth"
    os.symlink(b, a)
    os.symlink(a, b)
    return Case(["info", str(a)], ["a.pth"])


def case_pth_is_a_folder(tmp: Path) -> Case:
    (tmp / "dir.pth").mkdir()
    return Case(["info", str(tmp / "dir.pth")], ["dir.pth", "folder"])


# ----------------------------------------------------------------------------- paths, flags and sizes
def case_out_is_a_file(tmp: Path) -> Case:
    (tmp / "file").write_text("keep me")
    return Case(["train", *CLI_CFG, "--epochs", "5", "--out", str(tmp / "file")], [str(tmp / "file"), "not a folder"], tmp)


def case_out_dev_null(tmp: Path) -> Case:
    return Case(["train", *CLI_CFG, "--epochs", "5", "--out", "/dev/null"], ["/dev/null", "not a folder"])


def case_out_dangling_symlink(tmp: Path) -> Case:
    os.symlink(tmp / "nowhere", tmp / "link")
    return Case(["train", *CLI_CFG, "--epochs", "5", "--out", str(tmp / "link")], [str(tmp / "link"), "does not exist"], tmp)


def case_out_symlink_loop(tmp: Path) -> Case:
    os.symlink(tmp / "b", tmp / "a")
    os.symlink(tmp / "a", tmp / "b")
    return Case(["train", *CLI_CFG, "--epochs", "5", "--out", str(tmp / "a")], [str(tmp / "a")], tmp)


def case_out_empty(tmp: Path) -> Case:
    return Case(["train", *CLI_CFG, "--epochs", "5", "--out", ""], ["--out", "empty"])


def case_info_empty(tmp: Path) -> Case:
    return Case(["info", ""], ["empty"])


def case_reproduce_out_file(tmp: Path) -> Case:
    (tmp / "file").write_text("keep me")
    return Case(["reproduce", *CLI_CFG, "--epochs", "5", "--out", str(tmp / "file")], [str(tmp / "file"), "not a folder"], tmp)


def case_seed_2_64(tmp): return Case(["train", "--seed", str(2**64), "--out", str(tmp / "r")], ["--seed", "2**64"])
def case_lr_inf(tmp): return Case(["train", "--lr", "inf", "--out", str(tmp / "r")], ["--lr", "finite"])
def case_weight_decay_inf(tmp): return Case(["train", "--weight-decay", "inf", "--out", str(tmp / "r")], ["--weight-decay", "finite"])
def case_even_p(tmp): return Case(["train", "--p", "4", "--out", str(tmp / "r")], ["--p 4", "odd"])


def _size_case(tmp: Path, flags: list[str], expect: str) -> Case:
    case = Case(["train", *flags, "--epochs", "1", "--out", str(tmp / "r")], [expect, "would need about", "this machine has"])
    case.absent = tmp / "r"
    return case


def case_size_d_mlp(tmp): return _size_case(tmp, ["--d-mlp", "1000000000"], "d_mlp=1000000000")
def case_size_p_5003(tmp): return _size_case(tmp, ["--p", "5003"], "p=5003")
def case_size_p_100003(tmp): return _size_case(tmp, ["--p", "100003"], "p=100003")
def case_size_d_model(tmp): return _size_case(tmp, ["--d-model", str(2**20)], f"d_model={2**20}")


# ----------------------------------------------------------------------------- writes that fail, and divergence
def _failing_writes(code: int, after: int):
    real = runs.atomic_write_bytes
    count = [0]

    def write(path, data):
        if count[0] >= after:
            raise OSError(code, os.strerror(code), str(path))
        count[0] += 1
        real(path, data)

    return write


def _with_writes(write, action):
    def run():
        saved = runs.atomic_write_bytes
        runs.atomic_write_bytes = write
        try:
            return action()
        finally:
            runs.atomic_write_bytes = saved
    return run


def case_disk_full(tmp: Path) -> Case:
    argv = ["train", *CLI_CFG, "--epochs", "20", "--out", str(tmp / "r")]
    return Case(_with_writes(_failing_writes(errno.ENOSPC, 8), lambda: _cli(argv)), [str(tmp / "r"), "free space", "resumes from epoch 10"])


def case_file_too_big(tmp: Path) -> Case:
    argv = ["train", *CLI_CFG, "--epochs", "20", "--out", str(tmp / "r")]
    return Case(_with_writes(_failing_writes(errno.EFBIG, 3), lambda: _cli(argv)), [str(tmp / "r"), "File too large", "starts the run afresh"])


def case_read_only(tmp: Path) -> Case:
    argv = ["train", *CLI_CFG, "--epochs", "20", "--out", str(tmp / "r")]
    return Case(_with_writes(_failing_writes(errno.EROFS, 0), lambda: _cli(argv)), [str(tmp / "r"), "Read-only", "writable"])


def case_lr_diverges(tmp: Path) -> Case:
    from mechgrok.training.loop import train

    out = tmp / "r"
    return Case(lambda: train(CFG.replace(lr=1e30, warmup_steps=0), out, tune_process=False), ["diverged", "epoch", "--lr"])


def case_two_trainers(tmp: Path) -> Case:
    run = trained(tmp)
    from mechgrok.training.loop import train

    def second():
        with runs.lock_run_folder(run) if hasattr(runs, "lock_run_folder") else contextlib.nullcontext():
            return train(CFG.replace(epochs=30), run, tune_process=False)

    return Case(second, [str(run), "another trainer"], run)


# ----------------------------------------------------------------------------- analyses
def case_frequency_hooks_without_W_E(tmp: Path) -> Case:
    from mechgrok.analysis import ablations
    from mechgrok.tasks.modular import ModularTask

    run = runs.load_run(trained(tmp))
    tokens = ModularTask(7).tokens()
    perm = torch.arange(49).view(7, 7)[torch.tensor([1, 0, 2, 3, 4, 5, 6])].flatten()  # a-rows swapped

    def act():
        with torch.no_grad(), run.model.hooks(fwd_hooks=ablations.frequency_hooks(7, [1], site="logits")):
            return run.model(tokens[perm])

    return Case(act, ["W_E"])


def case_nan_embedding_row(tmp: Path) -> Case:
    from mechgrok.analysis import ablations

    run = runs.load_run(trained(tmp))
    with torch.no_grad():
        run.model.W_E[3] = float("nan")
    return Case(lambda: ablations.ablate_frequencies(run.model, [1]), ["W_E", "NaN"])


CASES: dict[str, Callable[[Path], Case]] = {
    name.removeprefix("case_"): fn for name, fn in sorted(globals().items()) if name.startswith("case_") and callable(fn)
}


# ----------------------------------------------------------------------------- running a case
def _cli(argv: list[str]):
    from mechgrok.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as exit_:  # argparse
            rc = exit_.code
    return _CLIResult(rc, err.getvalue())


@dataclass
class _CLIResult:
    rc: int
    stderr: str


def _snapshot(folder: Path | None, skip: tuple[str, ...]) -> dict[str, bytes]:
    if folder is None or not folder.exists():
        return {}
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_file() and not p.is_symlink() and rel not in skip:
            out[rel] = p.read_bytes()
    return out


def classify(name: str, root: Path) -> Outcome:
    """Build case ``name`` under ``root`` and run it (module docstring)."""
    root.mkdir(parents=True, exist_ok=True)
    with low_caps():
        case = CASES[name](root)
        before = _snapshot(case.guard, case.skip_guard)
        t0 = time.perf_counter()
        try:
            result = case.action() if callable(case.action) else _cli(case.action)
            error, message = None, ""
            if isinstance(result, _CLIResult):
                if result.rc == 2 or (result.rc != 0 and "Traceback" not in result.stderr and result.stderr):
                    error, message = "refused", result.stderr
                elif result.rc != 0:
                    error, message = "crash", result.stderr
        except (ValueError, FileNotFoundError) as err:
            error, message = "refused", f"{err}"
        except BaseException as err:  # noqa: BLE001 - a crash is what is being counted
            if isinstance(err, KeyboardInterrupt):
                raise
            error, message = "crash", f"{type(err).__name__}: {err}"
        seconds = time.perf_counter() - t0
    after = _snapshot(case.guard, case.skip_guard)
    if before != after:
        kind = "lost"
    elif error == "crash":
        kind = "crash"
    elif error is None:
        kind = "accepted" if case.refuse else "clear"
    elif all(word in message for word in case.expect) and not any(w in message for w in getattr(case, "forbid", [])):
        kind = "clear"
    else:
        kind = "unclear"
    absent = getattr(case, "absent", None)
    if kind == "clear" and absent is not None and absent.exists():
        kind = "unclear"  # refused, but it left a folder behind
    return Outcome(name, kind, message.strip()[:400], seconds)
