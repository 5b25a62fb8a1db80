"""The docs run: every code block of README.md and docs/*.md, and every reference they make resolves.

- every ```python block runs on its own (a fresh namespace, an empty temporary directory), so
  each one must define what it uses; illustrative code that cannot run there (a server,
  mpiexec, a GPU, a large download) is fenced ```bash or ```text instead;
- the ```pycon blocks of one file form one doctest session, run in order: each printed value
  is checked, so a walkthrough whose numbers change fails here;
- every repository path named in backticks (`tinyllm/train.py`, `docs/backprop.md`) exists,
  every `path.py::symbol` names a function, class or method defined in that file, and every
  link to `docs/x.md#section` (also from the package's docstrings) names a heading of that file.

The files are found when the tests are collected, so a new docs/*.md is checked without listing it.
"""

from __future__ import annotations

import ast
import doctest
import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT

import tinyllm as tl

DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Top-level folders a path in the docs may start with; `nn/block.py` and the like are read inside tinyllm/.
ROOTS = ("tinyllm/", "docs/", "tests/", "exercises/", "examples/", "scripts/", "benchmarks/", ".ci/")
PACKAGE_DIRS = ("autograd/", "nn/", "models/", "optim/", "tokenizer/", "backends/", "pretrained/", "quant/")
SYMBOL_REFERENCE = re.compile(r"([\w./-]+\.py)::([A-Za-z_][\w.]*)")
SECTION_LINK = re.compile(r"(docs/[\w.-]+\.md)#([\w-]+)")


def relative(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def code_blocks(path: Path, language: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, code) for each block fenced with ```language."""
    text = path.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(2))
        for match in FENCE.finditer(text)
        if match.group(1) == language
    ]


def skip_unless_numpy() -> None:
    if tl.get_backend().name != "numpy":
        pytest.skip("the docs' examples print and compare NumPy arrays")


PYTHON_BLOCKS = [
    pytest.param(path, line, code, id=f"{relative(path)}:{line}")
    for path in DOC_FILES
    for line, code in code_blocks(path, "python")
]
PYCON_FILES = [pytest.param(path, id=relative(path)) for path in DOC_FILES if code_blocks(path, "pycon")]


@pytest.mark.parametrize(("path", "line", "code"), PYTHON_BLOCKS)
def test_python_block_runs_on_its_own(path: Path, line: int, code: str, tmp_path, monkeypatch) -> None:
    skip_unless_numpy()
    monkeypatch.chdir(tmp_path)  # an empty directory: the block may write files, never into the checkout
    exec(compile(code, f"{relative(path)}, block at line {line}", "exec"), {"__name__": "__main__"})


@pytest.mark.parametrize("path", PYCON_FILES)
def test_pycon_blocks_print_what_they_say(path: Path, tmp_path, monkeypatch) -> None:
    skip_unless_numpy()
    monkeypatch.chdir(tmp_path)
    blocks = code_blocks(path, "pycon")
    text = "\n".join(code for _, code in blocks)
    test = doctest.DocTestParser().get_doctest(text, {"__name__": "__main__"}, relative(path), str(path), blocks[0][0])
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of the {result.attempted} examples in {relative(path)} failed (see above)"


# -- references ------------------------------------------------------------------------------------


def resolve_path(name: str) -> Path | None:
    """The repository file or folder a docs path names, or None if the name is not a repository path."""
    name = name.split("::")[0].split("#")[0].rstrip(".,:;)")
    if any(c in name for c in "*{}<>$ ") or "/" not in name:
        return None
    if name.startswith(ROOTS):
        return REPO_ROOT / name
    if name.startswith(PACKAGE_DIRS):
        return REPO_ROOT / "tinyllm" / name
    return None


def defined_symbols(path: Path) -> set[str]:
    """Names defined at the top of a Python file, plus Class.method for the methods of its classes."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{item.name}" for item in node.body if isinstance(item, ast.FunctionDef)}
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        if isinstance(node, ast.ImportFrom):  # re-exports: from .adamw import AdamW
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file: lower case, punctuation dropped, spaces to -."""
    anchors = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def prose(path: Path) -> str:
    """The text of a Markdown file outside its code blocks."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", [pytest.param(p, id=relative(p)) for p in DOC_FILES])
def test_named_paths_exist(path: Path) -> None:
    missing = []
    for name in re.findall(r"`([^`\n]+)`", prose(path)):
        target = resolve_path(name)
        if target is not None and not target.exists():
            missing.append(name)
    assert not missing, f"{relative(path)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("path", [pytest.param(p, id=relative(p)) for p in DOC_FILES])
def test_symbol_references_resolve(path: Path) -> None:
    unresolved = []
    for file_name, symbol in SYMBOL_REFERENCE.findall(path.read_text(encoding="utf-8")):
        target = resolve_path(file_name)
        if target is None or not target.is_file() or symbol not in defined_symbols(target):
            unresolved.append(f"{file_name}::{symbol}")
    assert not unresolved, f"{relative(path)} refers to symbols that are not defined there: {unresolved}"


def test_section_links_resolve() -> None:
    """Links to docs sections, from the docs and from the package's docstrings (the fused ops link to backprop.md)."""
    sources = DOC_FILES + sorted((REPO_ROOT / "tinyllm").rglob("*.py")) + sorted((REPO_ROOT / "exercises").rglob("*"))
    broken = []
    for source in sources:
        if not source.is_file():
            continue
        for doc, anchor in SECTION_LINK.findall(source.read_text(encoding="utf-8")):
            target = REPO_ROOT / doc
            if not target.exists() or anchor not in heading_anchors(target):
                broken.append(f"{relative(source)}: {doc}#{anchor}")
    assert not broken, f"links to sections that do not exist: {broken}"


def test_the_checks_above_catch_what_they_should() -> None:
    """The resolvers are not vacuous: a wrong path, symbol or section is caught."""
    assert resolve_path("tinyllm/no_such_file.py") is not None and not resolve_path("tinyllm/no_such_file.py").exists()
    assert resolve_path("nn/fused/attention.py").exists()
    train_symbols = defined_symbols(REPO_ROOT / "tinyllm" / "train.py")
    assert "train_step" in train_symbols and "TrainConfig.from_dict" in train_symbols
    assert "no_such_function" not in train_symbols
    assert "a-tour-of-the-source" not in heading_anchors(REPO_ROOT / "docs" / "backprop.md")
    assert "attention" in heading_anchors(REPO_ROOT / "docs" / "backprop.md")


def test_glossary_has_about_25_terms_each_pointing_at_code() -> None:
    entries = [line for line in (REPO_ROOT / "docs" / "glossary.md").read_text().splitlines() if line.startswith("- **")]
    assert len(entries) >= 25, f"docs/glossary.md has {len(entries)} terms"
    text = (REPO_ROOT / "docs" / "glossary.md").read_text()
    for entry in text.split("\n- **")[1:]:
        term = entry.split("**")[0]
        assert SYMBOL_REFERENCE.search(entry), f"glossary term {term!r} points at no file::symbol"
    for term in ("logits", "residual stream", "KV cache", "GQA", "RoPE", "bits per character", "perplexity"):
        assert f"- **{term}" in text, f"docs/glossary.md lacks {term!r}"
