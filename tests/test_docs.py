"""Every example in the docs runs as written.

Each page of ``docs/*.md`` and ``README.md`` is one test: its ```python blocks run in order, in
one namespace, in a fresh temporary working directory holding ``runs/mainline`` (a copy of the
tiny p=31 run of ``tests/_tiny_run.py``, trained once per test session) and the foreign files
``grokking_demo.pth`` and ``full_run_data.pth`` of docs/formats.md. A failure names the
page, the block and the line (tracebacks point into the ``.md`` file itself).

A block that cannot run in a test is marked by an HTML comment on the line before its fence,
``<!-- not run: why -->``; only such blocks are skipped, and they are counted (there should be
hardly any). Shell blocks (```bash) are not run, but every ``mechgrok <subcommand>`` in them
must exist, every ``*.py`` path the docs mention must exist, and every ``mechgrok.<name>`` the
docs mention must resolve.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import re
import shutil
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from _tiny_run import tiny_run
from mechgrok import registry

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(?P<why>.+?)\s*-->\s*$")
MAX_NOT_RUN = 3  # a block that cannot run is a cost: keep them few


@dataclass(frozen=True)
class Block:
    page: Path
    number: int  # 1-based among the page's blocks of this language
    line: int  # 1-based line of the first line of code
    lang: str
    code: str
    not_run: str | None  # the reason, when marked <!-- not run: ... -->

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)} {self.lang} block {self.number} (line {self.line})"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order."""
    lines = page.read_text().splitlines()
    out: list[Block] = []
    counts: dict[str, int] = {}
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        lang, start = fence.group(1), i + 1
        end = start
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.match(prev)
        counts[lang] = counts.get(lang, 0) + 1
        out.append(Block(page, counts[lang], start + 1, lang, "\n".join(lines[start:end]) + "\n",
                         marker.group("why") if marker else None))
        i = end + 1
    return out


def _all_blocks(lang: str) -> list[Block]:
    return [b for page in PAGES for b in blocks(page) if b.lang == lang]


@pytest.fixture(scope="session")
def mainline() -> Path:
    """A trained run to stand in for ``runs/mainline`` (p=31; the docs' code is p-agnostic)."""
    return tiny_run()


@pytest.fixture(scope="session")
def foreign_files(tmp_path_factory) -> dict[str, Path]:
    """The foreign checkpoints docs/formats.md reads, small (p=31), made as tests/test_formats.py makes them."""
    from test_formats import write_demo, write_original

    folder = tmp_path_factory.mktemp("foreign")
    write_demo(folder / "grokking_demo.pth", 31)
    write_original(folder / "full_run_data.pth", 31, 114)
    return {path.name: path for path in folder.iterdir()}


# Checks beyond "runs without error", per page: fn(namespace, stdout).
def _check_readme(ns: dict, out: str) -> None:
    assert out.count("AblationResult(") == 4, out
    assert ns["key"], "the README's model has key frequencies"


EXTRA_CHECKS = {"README.md": _check_readme}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_python_blocks_run(page: Path, mainline: Path, foreign_files: dict, tmp_path, monkeypatch) -> None:
    python = [b for b in blocks(page) if b.lang == "python"]
    if not python:
        pytest.skip(f"{page.name} has no python blocks")
    shutil.copytree(mainline, tmp_path / "runs" / "mainline")
    for name, path in foreign_files.items():
        shutil.copy(path, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    # The page runs as a module, as a script would run as __main__: so `f"{__name__}:Class"` names
    # what it defines (registry entries) and dataclasses find their module.
    module = types.ModuleType("docs_" + re.sub(r"\W", "_", page.stem))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    saved = {"TASKS": dict(registry.TASKS), "FAMILIES": dict(registry.FAMILIES)}  # restored afterwards
    namespace = module.__dict__
    stdout = io.StringIO()
    try:
        for block in python:
            if block.not_run:
                continue
            # Pad with blank lines so tracebacks give the line numbers of the .md file.
            code = compile("\n" * (block.line - 1) + block.code, str(page), "exec")
            failure = None
            try:
                with contextlib.redirect_stdout(stdout):
                    exec(code, namespace)
            except Exception as err:  # noqa: BLE001 - any failure of a docs example is reported
                # the traceback from the block on (not the harness), without chained exceptions
                tb = "".join(traceback.format_exception(type(err), err, err.__traceback__.tb_next, chain=False))
                failure = f"{block.where()} raised {type(err).__name__}: {err}\n\n{tb}"
            if failure:
                pytest.fail(failure, pytrace=False)
    finally:
        for name, table in saved.items():
            getattr(registry, name).clear()
            getattr(registry, name).update(table)
    check = EXTRA_CHECKS.get(str(page.relative_to(ROOT)))
    if check:
        check(namespace, stdout.getvalue())


def test_few_blocks_are_marked_not_run() -> None:
    marked = [b for b in _all_blocks("python") if b.not_run]
    assert len(marked) <= MAX_NOT_RUN, "\n".join(f"{b.where()}: {b.not_run}" for b in marked)


def _help_subcommands() -> set[str]:
    from mechgrok.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return set(sub.choices)


def _inline_code(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return re.findall(r"`([^`\n]+)`", text)


def _shell_snippets() -> list[tuple[str, str]]:
    """(where, text) of every shell block and inline code span of the docs."""
    out = [(b.where(), b.code) for b in _all_blocks("bash")]
    out += [(str(page.relative_to(ROOT)), span) for page in PAGES for span in _inline_code(page)]
    return out


def test_shell_examples_name_real_subcommands() -> None:
    known = _help_subcommands()
    bad = []
    for where, text in _shell_snippets():
        for name in re.findall(r"(?:^|[\s/])mechgrok\s+([a-z][\w-]*)", text, flags=re.M):
            if name not in known:
                bad.append(f"{where}: `mechgrok {name}` (subcommands: {sorted(known)})")
    assert not bad, "\n".join(bad)


def test_mentioned_files_exist() -> None:
    bad = []
    for page in PAGES:
        for path in sorted(set(re.findall(r"\b((?:mechgrok|experiments|tests|benchmarks)/[\w/]+\.py)\b", page.read_text()))):
            if not (ROOT / path).exists():
                bad.append(f"{page.relative_to(ROOT)}: {path}")
        for module in sorted(set(re.findall(r"python -m (experiments(?:\.\w+)+)", page.read_text()))):
            if not (ROOT / (module.replace(".", "/") + ".py")).exists():
                bad.append(f"{page.relative_to(ROOT)}: python -m {module}")
    assert not bad, "these paths do not exist:\n" + "\n".join(bad)


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    obj, i = None, len(parts)
    while i > 0:  # the longest importable module prefix
        try:
            obj = importlib.import_module(".".join(parts[:i]))
            break
        except ImportError:
            i -= 1
    for name in parts[i:]:
        if not hasattr(obj, name):
            return False
        obj = getattr(obj, name)
    return True


def test_mentioned_mechgrok_names_resolve() -> None:
    bad = []
    for page in PAGES:
        names = {m for span in _inline_code(page) for m in re.findall(r"\bmechgrok(?:\.\w+)+", span)}
        bad += [f"{page.relative_to(ROOT)}: {name}" for name in sorted(names) if not _resolves(name)]
    assert not bad, "these names do not exist:\n" + "\n".join(bad)


# ----------------------------------------------------------------------------- docs/architecture.md
# The layers of docs/architecture.md, bottom up, and the upward imports it names.
LAYERS = [
    ("mechgrok.config", "mechgrok.presets", "mechgrok.registry", "mechgrok.hooks", "mechgrok.scoring", "mechgrok.speed"),
    ("mechgrok.tasks",),
    ("mechgrok.models",),
    ("mechgrok.tensorfile", "mechgrok.torchfile", "mechgrok.runs", "mechgrok.formats", "mechgrok.training", "mechgrok.sweeps"),
    ("mechgrok.analysis",),
    ("mechgrok.report",),
    ("mechgrok.reproduce",),
    ("mechgrok.cli",),
]
UPWARD_IMPORTS = {
    ("mechgrok.models.transformer", "mechgrok.runs"),  # build_model(split=...) attaches the run
    ("mechgrok.report.figures", "mechgrok.reproduce.nanda2023"),  # the paper's numbers (data only)
    ("mechgrok.report.html", "mechgrok.reproduce.nanda2023"),
}


def _layer(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from pkg import module` counts as importing pkg.module
                name = f"{node.module}.{alias.name}"
                where = ROOT / name.replace(".", "/")
                found.add(name if where.with_suffix(".py").exists() or where.is_dir() else node.module)
    return found


def test_architecture_layers_hold() -> None:
    bad = []
    for path in sorted((ROOT / "mechgrok").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module == "mechgrok":
            continue  # the lazy public API names every layer
        rank = _layer(module)
        assert rank is not None, f"{module} is in no layer of docs/architecture.md"
        for imported in _imports(path):
            if imported.split(".")[0] == "experiments":
                bad.append(f"{module} imports {imported}: nothing in the package imports experiments/")
            if module.startswith("mechgrok.analysis") and imported.startswith("mechgrok.report"):
                bad.append(f"{module} imports {imported}: analysis never imports report")
            other = _layer(imported) if imported.startswith("mechgrok.") else None
            if other is not None and other > rank and (module, imported) not in UPWARD_IMPORTS:
                bad.append(f"{module} (layer {rank}) imports {imported} (layer {other})")
    assert not bad, "\n".join(bad)
