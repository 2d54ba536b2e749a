"""The package's structure, checked: imports flow one way, and modules stay readable.

The import graph counts every import of a project module, at module level or inside a
function (imports under ``if TYPE_CHECKING:`` are for annotations only and do not run). A
cycle there is a cycle in the design even when a function-level import hides it at load
time. Imports inside functions are kept only for optional extras, listed here with why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: import name -> folder of each shipped package
PACKAGES = {
    "qgraph": ROOT / "qgraph",
    "qgraph.backends": ROOT / "backends",
    "qgraph.passes": ROOT / "passes",
}
#: project modules that may be imported inside a function, and the extra that makes them lazy
LAZY_FOR_EXTRAS = {
    "qgraph.onnx": "onnx",  # qgraph.export_onnx and the CLI's export command
    "qgraph.reproduce": "hf",  # the CLI's reproduce command (transformers, tqdm)
    "qgraph.reproduce.arms": "hf",
    "qgraph.reproduce.presets": "hf",
    "qgraph.reproduce.page": "report",  # matplotlib
    "qgraph.review.html": "report",  # matplotlib
    "qgraph.backends.aer": "aer",  # qiskit-aer
}
#: the longest a shipped module may be (lines); split by responsibility beyond it
MAX_LINES = 530


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


class _ImportVisitor(ast.NodeVisitor):
    """Collects the project modules one module imports, noting those inside functions."""

    def __init__(self, name: str, package: str, modules: dict[str, Path]) -> None:
        self.name, self.package, self.modules = name, package, modules
        self.depth = 0
        self.edges: list[tuple[str, str, bool, int]] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def add(self, target: str, line: int) -> None:
        while target and target not in self.modules:
            target = target.rpartition(".")[0]
        if target and target != self.name:
            self.edges.append((self.name, target, self.depth > 0, line))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package
            for _ in range(node.level - 1):
                anchor = anchor.rpartition(".")[0]
            base = f"{anchor}.{base}" if base else anchor
        for alias in node.names:
            full = f"{base}.{alias.name}"
            self.add(full if full in self.modules else base, node.lineno)


def _imports(modules: dict[str, Path]) -> list[tuple[str, str, bool, int]]:
    """(importer, imported project module, inside a function?, line) for every import."""
    edges = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        visitor = _ImportVisitor(name, package, modules)
        visitor.visit(ast.parse(path.read_text()))
        edges += visitor.edges
    return edges


@pytest.fixture(scope="module")
def imports() -> list[tuple[str, str, bool, int]]:
    return _imports(_modules())


def test_the_import_graph_has_no_cycle(imports: list[tuple[str, str, bool, int]]) -> None:
    graph = nx.DiGraph((a, b) for a, b, _, _ in imports)
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, f"import cycles (function-level imports included): {cycles}"


def test_imports_inside_functions_are_only_for_optional_extras(
    imports: list[tuple[str, str, bool, int]],
) -> None:
    hidden = [
        f"{a}:{line} imports {b}"
        for a, b, inside, line in imports
        if inside and b not in LAZY_FOR_EXTRAS
    ]
    assert not hidden, "move these imports to module level: " + "; ".join(hidden)


def test_no_shipped_module_is_too_long() -> None:
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines, split them by responsibility: {long}"


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path: Path) -> None:
    """The graph above would miss what it is meant to catch if it skipped function bodies."""
    (tmp_path / "a.py").write_text("def f():\n    from qgraph.b import g\n")
    (tmp_path / "b.py").write_text("import qgraph.a\n")
    modules = {"qgraph.a": tmp_path / "a.py", "qgraph.b": tmp_path / "b.py"}
    edges = _imports(modules)
    assert ("qgraph.a", "qgraph.b", True, 2) in edges and (
        "qgraph.b",
        "qgraph.a",
        False,
        1,
    ) in edges


def test_each_pass_lives_in_a_file_named_after_it() -> None:
    """One pass per file, the file named as the pass in snake case (FindCandidates →
    find_candidates.py), so the pass table in passes/README.md leads straight to the code."""
    misplaced = []
    for path in (ROOT / "passes").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            bases = (
                {ast.unparse(b) for b in node.bases} if isinstance(node, ast.ClassDef) else set()
            )
            if bases & {"AnalysisPass", "RewritePass"}:
                expected = "".join(f"_{c.lower()}" if c.isupper() else c for c in node.name)
                if path.stem != expected.lstrip("_"):
                    misplaced.append(f"{node.name} in {path.relative_to(ROOT)}")
    assert not misplaced, f"passes in files not named after them: {misplaced}"
