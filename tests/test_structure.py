"""The package's shape: small modules, no import circle, gradio only in the UI.

Read from the source with `ast` (nothing is imported), counting imports inside functions too: an
import moved into a function to dodge a circle is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cnncompare"
ENGINE_MAX_LINES = 600
UI_MAX_LINES = 700


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package ('cnncompare.models' is its __init__)."""
    out = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _imports(name: str, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its file (functions included)."""
    path = modules[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    here = name if _is_package(name, modules) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cnncompare"):
                    found.add(_longest_module(alias.name, modules))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("cnncompare"):
                continue
            for alias in node.names:  # `from . import models` names a module; `from .x import f` a name
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else _longest_module(target, modules))
    found.discard(name)
    return {m for m in found if m}


def _longest_module(dotted: str, modules: dict[str, Path]) -> str:
    parts = dotted.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts)


def _graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = _modules(package)
    return {name: _imports(name, modules) for name in modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _without_front_doors(graph: dict[str, set[str]], package: Path = PACKAGE) -> dict[str, set[str]]:
    """The graph with each package __init__ (a front door that re-exports its submodules) replaced by what it
    re-exports: whoever imports the package depends on those modules."""
    modules = _modules(package)
    doors = {n for n in graph if _is_package(n, modules)}
    out = {}
    for n, deps in graph.items():
        if n in doors:
            continue
        expanded, todo = set(), list(deps)
        while todo:
            d = todo.pop()
            if d in doors:
                todo.extend(x for x in graph[d] if x not in expanded and x != n)
            elif d != n:
                expanded.add(d)
        out[n] = expanded
    return out


def test_no_import_circle_counting_imports_inside_functions():
    cycles = _cycles(_without_front_doors(_graph()))
    assert cycles == [], f"import circles: {cycles}"


def test_no_module_is_too_long():
    long = []
    for name, path in _modules().items():
        n = len(path.read_text().splitlines())
        limit = UI_MAX_LINES if ".ui" in name else ENGINE_MAX_LINES
        if n > limit:
            long.append(f"{name}: {n} lines (limit {limit})")
    assert long == []


def test_gradio_is_imported_only_by_the_ui():
    offenders = []
    for name, path in _modules().items():
        if name.startswith("cnncompare.ui"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "gradio" or n.startswith("gradio.") for n in names):
                offenders.append(name)
    assert offenders == []


def test_the_checker_finds_a_circle_hidden_in_a_function(tmp_path):
    """The checker itself, on a small package: a circle made by an import inside a function is reported, and
    one through a package's front door too."""
    pkg = tmp_path / "cnncompare"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n")
    (pkg / "c.py").write_text("from .sub import x\n")
    (pkg / "sub" / "__init__.py").write_text("from .x import x\n")
    (pkg / "sub" / "x.py").write_text("def x():\n    from .. import c\n")
    cycles = _cycles(_without_front_doors(_graph(pkg), pkg))
    assert sorted(cycles) == [["cnncompare.a", "cnncompare.b"], ["cnncompare.c", "cnncompare.sub.x"]]


def test_the_command_line_does_not_import_the_web_face():
    """`cnncompare app` hands its process to `python -m cnncompare.ui`: the CLI stands on the engine alone."""
    graph = _graph()
    assert sorted(m for m in graph["cnncompare.cli"] if m.startswith("cnncompare.ui")) == []


def test_files_are_written_whole_in_one_place():
    """`fileio` owns the temporary-file convention: no other module spells a `.tmp` name (writers use
    `atomic_path`/`write_atomic`, readers `is_partial`)."""
    offenders = []
    for name, path in _modules().items():
        if name == "cnncompare.fileio":
            continue
        offenders += [f"{name}:{line}" for line, text in _strings(path) if ".tmp" in text]
    assert offenders == []


def _strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module, without its docstrings (which may say anything)."""
    tree = ast.parse(path.read_text())
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body and isinstance(n.body[0], ast.Expr)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
    ]


def test_the_freeze_vocabulary_is_spelled_once():
    """`FreezePolicy.FORMS` and `.CHOICES` are the one spelling of the policies for every help text and list."""
    spelled = [
        f"{name}:{line}"
        for name, path in _modules().items()
        for line, text in _strings(path)
        if "| stages:K" in text or "stem + stage" in text
    ]
    assert spelled and all(s.startswith("cnncompare.settings:") for s in spelled), spelled


def test_benchmark_results_keep_one_current_section_per_benchmark():
    """benchmarks/RESULTS.md is a result page, not an append log: a new run replaces its benchmark's section."""
    import sys

    sys.path.insert(0, str(PACKAGE.parent))
    from benchmarks._results import HEADER, RESULTS, replaced, sections

    _, parts = sections(RESULTS.read_text())
    titles = [t for t, _ in parts]
    assert len(titles) == len(set(titles)), titles
    page = replaced(HEADER, "A", "\n## A\n\nfirst-run-xyz\n")
    page = replaced(page, "B", "\n## B\n\nb\n")
    page = replaced(page, "A", "\n## A\n\nsecond-run-xyz\n")
    assert [t for t, _ in sections(page)[1]] == ["A", "B"] and "first-run-xyz" not in page and "second-run-xyz" in page


def test_one_way_to_open_a_queued_endpoint():
    """The web face reaches the fair queue's `queued` only through `ui.common.in_line` (who calls, their place in line,
    one-sentence refusals); the training's own line (`ui.jobs`, which takes and holds its place across the run) is
    the one other door."""
    users = sorted(
        name
        for name, path in _modules().items()
        if name.startswith("cnncompare.ui") and ("queued(" in path.read_text() and "fairqueue" in path.read_text())
    )
    assert users == ["cnncompare.ui.common"], users


MAX_FUNCTION_LINES = 80


def test_no_function_is_over_80_lines():
    """A tab's `build` is its layout, its handlers and their wiring, each a function of its own."""
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert long == []


def test_run_folders_are_named_and_copied_in_one_place():
    """`runfolder.RunFolder` owns a run folder's name, its copies (hard links) and its tar: no other module names a
    run folder, links or copies files, or tars one (the CIFAR reader opens its own archives)."""
    marks = ("shutil.copy2(", "os.link(", "tarfile.open(", "{base.name}-{i}")
    spelled = {name for name, path in _modules().items() if any(m in path.read_text() for m in marks)}
    assert spelled == {"cnncompare.runfolder", "cnncompare.data.cifar"}, spelled
