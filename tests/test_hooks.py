"""Hook-name constants (mechgrok/hooks.py): each fires with its documented shape, and the docs agree."""

import re
from pathlib import Path

import pytest
import torch

from mechgrok import hooks
from mechgrok.config import Config
from mechgrok.models.transformer import build_model
from mechgrok.tasks.modular import ModularTask, make_split

ROOT = Path(__file__).resolve().parents[1]
CONSTANTS = {name: getattr(hooks, name) for name in hooks.__all__ if isinstance(getattr(hooks, name), str)}


@pytest.fixture(scope="module")
def small():
    cfg = Config(p=7, d_model=16, n_heads=2, d_mlp=24)
    model = build_model(cfg, split=make_split(49, 0.5, 0))
    return cfg, model


def axis_sizes(cfg, model, batch):
    return {
        "batch": batch,
        "pos": 3,
        "query_pos": 3,
        "key_pos": 3,
        "d_model": cfg.d_model,
        "head": cfg.n_heads,
        "neuron": cfg.d_mlp,
        "d_vocab_out": model.cfg.d_vocab_out,
    }


def test_every_constant_has_a_shape_and_meaning():
    assert set(CONSTANTS.values()) == set(hooks.HOOK_SHAPES) == set(hooks.HOOK_MEANINGS)


@pytest.mark.parametrize("const", sorted(CONSTANTS))
def test_hook_fires_with_documented_shape(small, const):
    cfg, model = small
    name = CONSTANTS[const]
    tokens = ModularTask(cfg.p).tokens()[:10]
    seen = []

    def record(activation, hook):
        seen.append((hook.name, tuple(activation.shape)))
        return activation

    with torch.no_grad(), model.hooks(fwd_hooks=[(name, record)]):
        model(tokens)
    sizes = axis_sizes(cfg, model, len(tokens))
    expected = tuple(sizes[axis] for axis in hooks.HOOK_SHAPES[name].split())
    assert seen == [(name, expected)]
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


def test_equals_pos_is_the_equals_token():
    tokens = ModularTask(7).tokens()
    assert (tokens[:, hooks.EQUALS_POS] == 7).all()


def test_docs_table_lists_every_hook_with_its_shape():
    doc = (ROOT / "docs" / "hooks.md").read_text()
    for const, name in CONSTANTS.items():
        row = next((line for line in doc.splitlines() if f"`{name}`" in line and line.startswith("|")), None)
        assert row is not None, f"docs/hooks.md has no table row for {name}"
        assert f"`{const}`" in row
        assert hooks.HOOK_SHAPES[name] in row


def test_library_spells_no_hook_name_literally():
    """Analysis modules reach hook points only through the constants."""
    names = set(CONSTANTS.values())
    for module in ("analysis/ablations.py", "analysis/circuits.py", "analysis/fourier.py", "analysis/progress.py"):
        text = (ROOT / "mechgrok" / module).read_text()
        literals = set(re.findall(r"[\"']([\w.]+)[\"']", text))
        assert not (literals & names), f"{module} spells hook names {literals & names}; use mechgrok.hooks"
