"""The package's shape: a light top-level import, no import cycles, registries that resolve."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mechgrok import registry
from mechgrok.config import Config
from mechgrok.hooks import Site

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mechgrok"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _module_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """mechgrok modules imported at import time (not inside functions, not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in known)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module in known:
                    found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)

    visit(tree.body)
    # importing a.b.c runs a and a.b first
    for mod in list(found):
        parts = mod.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in known)
    found.discard(name)
    return found


def test_the_import_graph_has_no_cycles():
    modules = _modules()
    graph = {name: _module_level_imports(name, path, set(modules)) for name, path in modules.items()}
    # a package's __init__ importing its own children is not a cycle through the child
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if node.startswith(nxt + "."):  # a submodule needs its parent package, which is already loading
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for name in graph:
        if name not in state:
            dfs(name)


def test_import_mechgrok_loads_neither_torch_nor_transformer_lens():
    code = "import sys, mechgrok, mechgrok.cli; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformer_lens', 'pandas'))))"
    proc = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_lazy_api_resolves_every_name():
    import mechgrok

    for name in mechgrok.__all__:
        assert getattr(mechgrok, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mechgrok.nope  # noqa: B018


def test_transformer_lens_is_imported_in_one_place():
    offenders = [p for p in PACKAGE.rglob("*.py") if "transformer_lens" in p.read_text() and p.name != "lens.py"
                 and any(line.lstrip().startswith(("import transformer_lens", "from transformer_lens"))
                         for line in p.read_text().splitlines())]
    assert offenders == []


def test_registries_resolve_and_refuse_unknown_names():
    family = registry.family("transformer")
    assert family.name == "transformer"
    assert set(family.sites) == {"embeddings", "neurons", "logits"}
    assert family.load_fast_step().__name__ == "FastPath"
    model = family.build(Config(p=7, d_model=8, n_heads=2, d_mlp=16))
    names = {n for n, _ in model.named_parameters()}
    assert names == set(family.parameter_names)
    assert set(family.hook_shapes) <= set(model.hook_dict)
    assert registry.task_class("modular")(p=7).describe() == "c = add(a, b) mod 7"
    with pytest.raises(ValueError, match="unknown family 'no_such_family'"):
        registry.family("no_such_family")
    with pytest.raises(ValueError, match="site='heads' is not one of"):
        family.site("heads")
    with pytest.raises(ValueError, match="family='no_such_family' is not one of"):
        Config(family="no_such_family")
    with pytest.raises(ValueError, match="family='parity_mlp' trains on task 'parity'"):
        Config(family="parity_mlp")


def test_site_applies_at_its_position_only():
    x = torch.zeros(4, 3, 5)
    out = Site("hook", pos=2).apply(x, lambda part: part + 1)
    assert out[:, 2].eq(1).all() and out[:, :2].eq(0).all() and x.eq(0).all()
    assert Site("hook").apply(x, lambda part: part + 1).eq(1).all()
    assert Site("hook", 2).describe() == "hook at pos 2"


def test_no_print_in_the_library_but_the_cli():
    for path in PACKAGE.rglob("*.py"):
        if path.name == "cli.py":
            continue
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"]
        assert not calls, f"{path} prints; only mechgrok/cli.py may"


def test_the_trainer_builds_through_the_registry_and_trains_a_family_without_a_fast_step_generically(tmp_path, monkeypatch):
    from mechgrok.models.family import ModelFamily
    from mechgrok.training.loop import train

    transformer = registry.family("transformer")
    slow = ModelFamily(name="slow", build=transformer.build, hook_shapes=transformer.hook_shapes,
                       hook_meanings=transformer.hook_meanings, sites=transformer.sites,
                       parameter_names=transformer.parameter_names, fast_step=None)
    monkeypatch.setitem(registry.FAMILIES, "slow", f"{__name__}:_SLOW")
    monkeypatch.setitem(globals(), "_SLOW", slow)
    monkeypatch.setitem(registry.FAMILY_TASKS, "slow", "modular")
    cfg = Config(p=7, d_model=8, n_heads=2, d_mlp=16, epochs=3, family="slow")
    result = train(cfg, tmp_path / "run", tune_process=False)  # mechgrok.training.stack: autograd on model(tokens)
    assert result.epoch == 3 and type(result.model) is type(transformer.build(cfg))
    assert result.metrics.train_loss.iloc[-1] < result.metrics.train_loss.iloc[0]


def test_names_written_twice_for_a_torch_free_cli_agree():
    """The CLI lists figures and reads the task's shape without importing torch; the copies must agree."""
    from mechgrok.report import FIGURE_NAMES, figures
    from mechgrok.tasks.modular import ModularTask

    assert tuple(figures.FIGURES) == FIGURE_NAMES
    for p in (3, 31, 113):
        cfg, task = Config(p=p), ModularTask(p)
        assert (cfg.d_vocab, cfg.d_vocab_out, cfg.n_ctx) == (task.d_vocab, task.d_vocab_out, task.n_ctx)
