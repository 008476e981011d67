"""The README's Python examples run as written, on a small trained run."""

import re
from pathlib import Path

from mechgrok.config import Config
from mechgrok.training.loop import train

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    run_dir = tmp_path / "mainline"
    train(Config(p=31, frac_train=0.7, lr=3e-3, epochs=1500, checkpoint_every=500), run_dir)
    namespace: dict = {}
    for block in blocks:
        exec(block.replace('"runs/mainline"', repr(str(run_dir))), namespace)
    out = capsys.readouterr().out
    assert out.count("AblationResult(") == 4
    assert namespace["key"], "the README's model has key frequencies"
