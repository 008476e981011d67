import subprocess
import sys

from mechgrok import runs
from mechgrok.cli import build_parser, main
from mechgrok.config import Config
import dataclasses


def test_every_config_field_is_a_flag():
    parser = build_parser()
    args = parser.parse_args(["train"])
    assert Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}) == Config()
    flags = parser._subparsers._group_actions[0].choices["train"].format_help()
    for f in dataclasses.fields(Config):
        assert "--" + f.name.replace("_", "-") in flags


def test_train_and_info(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--p", "11", "--frac-train", "0.5", "--epochs", "30", "--checkpoint-every", "10",
                 "--no-progress", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "epoch 30/30" in text and "train loss" in text and "test  loss" in text
    assert runs.checkpoint_epochs(out) == [0, 10, 20, 30]

    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "c = add(a, b) mod 11" in text and "4 checkpoints" in text

    assert main(["info", str(runs.checkpoint_path(out, 10))]) == 0
    assert "loaded   epoch 10" in capsys.readouterr().out


def test_bad_value_gives_clear_error(tmp_path, capsys):
    assert main(["train", "--p", "2", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "p=2" in err and ">= 3" in err
    assert not (tmp_path / "x").exists()
    assert main(["info", str(tmp_path / "nothing.safetensors")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_console_script_runs():
    done = subprocess.run([sys.executable, "-m", "mechgrok.cli", "train", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--frac-train" in done.stdout
