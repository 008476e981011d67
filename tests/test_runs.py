import json
import os

import pytest
import torch

from mechgrok.runs import attached
from safetensors.torch import save_file

from mechgrok import runs
from mechgrok.config import Config
from mechgrok.models.transformer import HookedTransformer
from mechgrok.training.loop import train

CFG = Config(p=11, frac_train=0.5, epochs=20, checkpoint_every=10, seed=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "run"
    train(CFG, folder, tune_process=False)
    return folder


def test_load_run_and_checkpoint(run_dir):
    run = runs.load_run(run_dir)
    assert isinstance(run.model, HookedTransformer)
    assert run.epoch == 20 and run.checkpoint_epochs == [0, 10, 20]
    assert run.config == CFG and run.task.p == 11
    assert attached(run.model).split is run.split
    early = runs.load_run(run_dir, epoch=10)
    assert not torch.equal(early.model.W_E, run.model.W_E)
    same = runs.load_checkpoint(runs.checkpoint_path(run_dir, 10))
    assert torch.equal(same.model.W_in, early.model.W_in)
    assert torch.equal(run.load_epoch(0).W_U, runs.load_run(run_dir, epoch=0).model.W_U)


def test_atomic_write_keeps_old_file_when_killed(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    runs.atomic_write_bytes(target, b"old contents")

    def killed(*args):
        raise KeyboardInterrupt  # a kill between writing and renaming

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        runs.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"], "no temporary file is left behind"


def test_truncated_checkpoint_is_reported(run_dir, tmp_path):
    data = runs.checkpoint_path(run_dir, 20).read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        runs.load_checkpoint(cut)


def test_foreign_safetensors_is_reported(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a mechgrok checkpoint"):
        runs.load_checkpoint(path)
    junk = tmp_path / "junk.safetensors"
    junk.write_text("hello")
    with pytest.raises(ValueError, match="not a readable mechgrok checkpoint"):
        runs.load_checkpoint(junk)


def test_wrong_p_is_reported(run_dir):
    with pytest.raises(ValueError, match="p=11, not p=113"):
        runs.load_checkpoint(runs.checkpoint_path(run_dir, 20), p=113)
    with pytest.raises(ValueError, match="p=11, not p=113"):
        runs.load_run(run_dir, p=113)


def test_edited_config_is_reported(run_dir, tmp_path):
    ckpt = runs.read_checkpoint_file(runs.checkpoint_path(run_dir, 20))
    meta = dict(ckpt.metadata, config=json.dumps(Config(p=13).to_dict()))
    tensors = {f"model.{k}": v for k, v in ckpt.model_state.items()}
    tensors.update({"split.train": ckpt.split.train, "split.test": ckpt.split.test})
    path = tmp_path / "edited.safetensors"
    save_file(tensors, path, metadata=meta)
    with pytest.raises(ValueError, match="W_E should be"):
        runs.load_checkpoint(path)


def test_not_a_run_folder_and_missing_epoch(run_dir, tmp_path):
    with pytest.raises(ValueError, match="not a mechgrok run folder"):
        runs.load_run(tmp_path)
    with pytest.raises(ValueError, match="no checkpoint at epoch 15"):
        runs.load_run(run_dir, epoch=15)
    with pytest.raises(FileNotFoundError):
        runs.load_checkpoint(tmp_path / "missing.safetensors")


def test_checkpoint_needs_no_pickle(run_dir):
    # safetensors files hold raw tensors and JSON only: no pickle opcodes anywhere
    header = runs.checkpoint_path(run_dir, 20).read_bytes()[:200]
    assert header[8:9] == b"{"


def test_written_files_follow_the_umask(tmp_path):
    target = tmp_path / "file.bin"
    runs.atomic_write_bytes(target, b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_new_run_folder_appears_whole_or_not_at_all(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o750)
    with runs.new_run_folder(empty) as folder:
        assert folder != empty and folder.parent == tmp_path
        runs.atomic_write_text(folder / "a.txt", "a\n")
        assert not (empty / "a.txt").exists()  # nothing shows until the folder is complete
    assert (empty / "a.txt").read_text() == "a\n" and (empty.stat().st_mode & 0o777) == 0o750

    with pytest.raises(RuntimeError):
        with runs.new_run_folder(tmp_path / "failed") as folder:
            runs.atomic_write_text(folder / "a.txt", "a\n")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no half run, no temporary folder

    with pytest.raises(ValueError, match="not empty any more.*nothing in it was touched"):  # something wrote into the target meanwhile
        with runs.new_run_folder(tmp_path / "raced") as folder:
            (tmp_path / "raced").mkdir()
            (tmp_path / "raced" / "theirs.txt").write_text("theirs\n")
    assert [p.name for p in (tmp_path / "raced").iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "raced"]
