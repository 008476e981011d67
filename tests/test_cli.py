import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from mechgrok import runs, speed
from mechgrok.cli import build_parser, main
from mechgrok.config import FIELD_GROUPS, Config
from mechgrok.training.loop import train

CLI = [sys.executable, "-m", "mechgrok.cli"]
# A tiny run in flags: p=11 on half the pairs (a fraction of a second to train).
SMALL = ["--p", "11", "--frac-train", "0.5", "--checkpoint-every", "10", "--no-progress"]


def flags(cfg: Config) -> list[str]:
    """Every field of ``cfg`` as command-line flags (a seed left None, "the run's seed", is a flag not given)."""
    return [a for f, v in cfg.to_dict().items() if v is not None for a in ("--" + f.replace("_", "-"), str(v))]


def test_every_config_field_is_a_flag_in_its_group():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for command in ("train", "reproduce"):
        args = parser.parse_args([command])
        # flags default to None, so a command can tell the given ones apart
        assert all(getattr(args, f.name) is None for f in dataclasses.fields(Config))
        assert Config(**{k: v for k, v in vars(parser.parse_args([command, *flags(Config())])).items()
                         if k in Config.__dataclass_fields__}) == Config()
        groups = {g.title: [a.dest for a in g._group_actions] for g in commands[command]._action_groups}
        for name, fields in FIELD_GROUPS.items():
            title = next(t for t in groups if t.startswith(name + " settings"))
            assert tuple(groups[title]) == fields


def test_train_and_info(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", *SMALL, "--epochs", "30", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "epoch 30/30" in text and "train loss" in text and "test  loss" in text
    assert runs.checkpoint_epochs(out) == [0, 10, 20, 30]

    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "c = add(a, b) mod 11" in text and "4 checkpoints" in text
    assert "trained  to epoch 30 of 30" in text and "final    epoch 30" in text

    assert main(["info", str(runs.checkpoint_path(out, 10))]) == 0
    assert "loaded   epoch 10" in capsys.readouterr().out


def test_continuing_uses_the_saved_config(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--seed", "3", "--lr", "2e-3", "--epochs", "20", "--out", str(out)]) == 0
    capsys.readouterr()
    # only --epochs: every other setting comes from the run folder, not from Config()'s defaults
    assert main(["train", "--out", str(out), "--epochs", "40", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "resuming" in text and "from epoch 20" in text and "epoch 40/40" in text
    assert runs.read_config(out) == Config(p=11, frac_train=0.5, seed=3, lr=2e-3, checkpoint_every=10, epochs=40)
    # a finished run with no flags at all: nothing to do
    assert main(["train", "--out", str(out), "--no-progress"]) == 0
    assert "already trained to epoch 40" in capsys.readouterr().out


def test_info_of_a_run_still_training_says_newest(tmp_path, capsys):
    def interrupt_at_epoch_50(row):
        if row["epoch"] == 50:
            os.kill(os.getpid(), signal.SIGINT)

    cfg = Config(p=11, frac_train=0.5, epochs=200, checkpoint_every=10)
    assert train(cfg, tmp_path / "run", on_eval=interrupt_at_epoch_50).interrupted
    assert main(["info", str(tmp_path / "run")]) == 0
    text = capsys.readouterr().out
    assert "trained  to epoch 50 of 200" in text and "newest   epoch 50" in text and "final" not in text


def test_contradicting_flag_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--epochs", "20", "--out", str(out)]) == 0
    files = sorted(p.name for p in out.rglob("*"))
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--p", "13", "--weight-decay", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--p 13 contradicts its p=11" in err and "--weight-decay 0.5 contradicts its weight_decay=1.0" in err
    assert "--epochs" in err  # what may change instead
    assert sorted(p.name for p in out.rglob("*")) == files
    # repeating a saved value is no contradiction
    assert main(["train", "--out", str(out), "--p", "11", "--epochs", "20", "--no-progress"]) == 0


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["train", "--p", "10"], ["p=10 is even", "odd p"]),
        (["train", "--p", "2"], ["p=2", ">= 3"]),
        (["train", "--d-model", "100", "--n-heads", "3"], ["d_model=100", "n_heads=3"]),
        (["reproduce", "--p", "12"], ["p=12 is even"]),
    ],
)
def test_bad_config_value_is_one_clear_line(tmp_path, capsys, argv, needles):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mechgrok: error: ") and err.count("\n") == 1
    assert all(n in err for n in needles), err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["train", "--p", "ten"], ["'ten' is not an integer", "--p 113"]),
        (["train", "--lr", "fast"], ["'fast' is not a number", "--lr 0.001"]),
        (["train", "--threads", "0"], ["'0' is not an integer >= 1", "--threads 1"]),
        (["reproduce", "--seeds", "0"], ["'0' is not an integer >= 1", "--seeds 1"]),
        (["train", "--loss-dtype", "float16"], ["'float16'", "float64", "float32"]),
    ],
)
def test_bad_flag_value_names_it_and_the_fix(capsys, argv, needles):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert all(n in err for n in needles), err
    assert len(err.splitlines()) <= 3  # a short usage line, then the message


def test_even_p_exits_2_without_traceback(tmp_path):
    done = subprocess.run(CLI + ["train", "--p", "10", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "p=10 is even" in done.stderr


def test_threads_flag_sets_the_count_inside_training_and_restores_it(tmp_path, capsys):
    before = torch.get_num_threads()
    # one epoch: two threads on a busy 2-core test machine can be many times slower
    assert main(["train", *SMALL, "--epochs", "1", "--threads", "2", "--out", str(tmp_path / "a")]) == 0
    assert "on 2 threads" in capsys.readouterr().out  # TrainResult.threads, read inside the trainer
    assert torch.get_num_threads() == before
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert f"on {speed.default_threads()} thread" in capsys.readouterr().out


def test_threads_help_states_the_real_default(monkeypatch):
    monkeypatch.delenv("MECHGROK_THREADS", raising=False)
    parser = build_parser()
    for command in ("train", "reproduce", "table", "figure", "sweep"):
        sub = parser._subparsers._group_actions[0].choices[command]
        action = next(a for a in sub._actions if a.dest == "threads")
        assert f"default: {speed.default_threads()}," in action.help, command


def test_resume_message_comes_first_and_ctrl_c_hint_once(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--epochs", "20", "--out", str(out)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Ctrl-C as from a terminal: the default SIGINT disposition (a test runner's worker may ignore
    # SIGINT, and a child inherits that, so a signal sent before the trainer's handler would be lost)
    proc = subprocess.Popen(CLI + ["train", "--out", str(out), "--epochs", "1000000", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = proc.stdout.readline()
    # printed at the start, while training is still running (not once it has ended)
    assert first.startswith(f"resuming {out} from epoch 20") and proc.poll() is None
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=300)  # one step and a checkpoint; generous for a loaded machine
    assert proc.returncode == 130, err
    assert (rest + err).count("run the same command again to resume") == 1 and "Traceback" not in err


def test_reproduce_ctrl_c_prints_the_resume_hint_once(tmp_path, capsys):
    out = tmp_path / "rep"

    def press_ctrl_c_once_training():  # in-process: the trainer's SIGINT handler runs in this thread
        deadline = time.time() + 60
        while not (out / runs.METRICS_FILE).exists() and time.time() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c_once_training, daemon=True).start()
    assert main(["reproduce", "--p", "13", "--epochs", "1000000", "--out", str(out), "--no-progress"]) == 130
    text = capsys.readouterr().out
    assert text.count("to resume") == 1 and "run the same command again to resume" in text, text
    assert runs.read_config(out).p == 13  # --p reached the trained config
    assert 0 < runs.read_checkpoint_file(out / runs.RESUME_FILE).epoch < 1000000


def test_reproduce_reuses_a_run_with_its_saved_config(tmp_path, capsys):
    """`reproduce --out RUN` on a finished run: its own config, no training, the same report."""
    cfg = Config(p=31, frac_train=0.7, d_model=64, d_mlp=256, lr=3e-3, epochs=1000, eval_every=50,
                 checkpoint_every=250, loss_dtype="float32")
    out = tmp_path / "run"
    assert main(["train", *flags(cfg), "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    capsys.readouterr()

    assert main(["reproduce", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "reused the finished run" in text and "resuming" not in text
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.safetensors")} == stamps
    summary = json.loads((out / "summary.json").read_text())
    assert Config(**summary["config"]) == cfg and summary["epochs"] == 1000
    assert "key frequencies:" in text and "paper" not in text  # the paper's numbers are for p=113 only

    # its config flags reach the comparison with the saved run
    assert main(["reproduce", "--out", str(out), "--seed", "4"]) == 2
    assert "--seed 4 contradicts its seed=0" in capsys.readouterr().err


def test_help_builds_without_torch():
    code = ("import sys; from mechgrok.cli import build_parser; build_parser(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pandas', 'transformer_lens'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    for argv in (["--help"], ["train", "--help"], ["reproduce", "--help"]):
        code = ("import sys, runpy; sys.argv = ['mechgrok', *%r]\n"
                "try:\n    runpy.run_module('mechgrok.cli', run_name='__main__')\n"
                "except SystemExit:\n    pass\n"
                "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pandas', 'transformer_lens'}))"
                % (argv,))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith("LOADED []"), (argv, done.stdout[-300:])


def test_console_script_runs():
    done = subprocess.run(CLI + ["train", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--frac-train" in done.stdout and "--threads" in done.stdout


def test_cli_names_the_config_file_as_runs_does():
    from mechgrok import cli

    assert cli._CONFIG_FILE == runs.CONFIG_FILE


def test_default_run_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--p", "11", "--frac-train", "0.5", "--epochs", "2", "--no-progress"]) == 0
    assert runs.read_config(tmp_path / "runs/add-p11-frac0.5-seed0").epochs == 2
    # the same flags name the same default folder, whose run continues
    assert main(["train", "--p", "11", "--frac-train", "0.5", "--epochs", "4", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    from mechgrok.cli import _reproduce_dir

    assert _reproduce_dir(Config(epochs=5)) == Path("runs/mainline")
    assert _reproduce_dir(Config(p=97)) == Path("runs/add-p97-frac0.3-seed0")


def test_a_closed_pipe_ends_quietly():
    """`mechgrok ... | head` closes our stdout early: no BrokenPipeError traceback."""
    proc = subprocess.Popen(CLI + ["train", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before anything is written
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_train_and_info_on_the_pair_families(tmp_path, capsys):
    from mechgrok.cli import main

    mlp = ["--family", "mlp", "--p", "11", "--d-model", "16", "--d-mlp", "8", "--pairs", "unordered",
           "--frac-train", "0.5", "--warmup-steps", "0", "--epochs", "20", "--no-progress"]
    assert main(["train", *mlp, "--out", str(tmp_path / "mlp")]) == 0
    assert main(["info", str(tmp_path / "mlp")]) == 0
    out = capsys.readouterr().out
    assert "pairs a <= b" in out and "family mlp: embed.W_E [11, 16], mlp.W_in [16, 8], mlp.W_out [8, 16]" in out
    parity = ["--task", "parity", "--family", "parity_mlp", "--n-bits", "10", "--n-train", "50", "--n-test", "50",
              "--d-mlp", "8", "--decay", "l1", "--weight-decay", "1e-4", "--epochs", "20", "--no-progress"]
    assert main(["train", *parity, "--out", str(tmp_path / "parity")]) == 0
    assert main(["info", str(tmp_path / "parity")]) == 0
    out = capsys.readouterr().out
    assert "parity of the first 3 of 10 bits; train 50 / test 50 strings" in out and "L1 decay 0.0001" in out


def test_train_refuses_a_device_it_cannot_use_before_writing(tmp_path, capsys):
    import torch

    from mechgrok.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is of a device it lacks")

    assert main(["train", "--p", "11", "--epochs", "2", "--out", str(tmp_path / "t"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "--device cpu" in err
    assert not (tmp_path / "t").exists()
