"""The import graph of swrr's modules, read with `ast`: no import circle, counting imports inside
functions, and nothing inside the package imports its face (`swrr/__init__`, the folder swrr_core/).

Modules are named by their installed names through setup.cfg's package_dir (swrr_core/ -> swrr,
extract/ -> swrr.extract, ...). Edges: `import a.b`, `from a.b import c` (to a.b.c when that is a
module, else to a.b), relative imports, importlib.import_module("literal"), at any depth; not
those under `if TYPE_CHECKING:`, which never run. The old bare names (extract., train., ...)
resolve to the same files, so a stray one still counts.
"""
import ast
import configparser
import textwrap
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
FACE = "swrr"
OLD_NAMES = {"swrr_core": "swrr", "extract": "swrr.extract", "train": "swrr.train", "predict": "swrr.predict"}

Edge = Tuple[str, str, int]  # (importing module, imported module, line)


def package_folders(root: Path) -> Dict[str, Path]:
    """setup.cfg's package_dir: installed package name -> folder."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(root / "setup.cfg")
    pairs = (line.split("=", 1) for line in parser.get("options", "package_dir").splitlines() if "=" in line)
    return {name.strip(): root / folder.strip() for name, folder in pairs}


def find_modules(folders: Dict[str, Path]) -> Dict[str, Tuple[Path, bool]]:
    """Every module: dotted name -> (file, is a package's __init__)."""
    modules = {}
    for package, folder in folders.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            is_init = parts[-1] == "__init__"
            name = ".".join((package, *(parts[:-1] if is_init else parts)))
            modules.setdefault(name, (path, is_init))  # a subpackage mapped on its own is the same file
    return modules


def _runs(node: ast.AST) -> List[ast.AST]:
    """The child nodes that execute: the body of `if TYPE_CHECKING:` does not."""
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        return node.orelse
    return list(ast.iter_child_nodes(node))


def module_imports(name: str, path: Path, is_init: bool, modules) -> List[Edge]:
    """The modules `name` imports (edges to swrr's own modules only)."""
    package = name if is_init else name.rpartition(".")[0]

    def resolve(dotted: str) -> str:
        head, _, rest = dotted.partition(".")
        if head in OLD_NAMES:
            dotted = OLD_NAMES[head] + ("." + rest if rest else "")
        while dotted and dotted not in modules:  # `import swrr.train.loop.x`: the module part
            dotted = dotted.rpartition(".")[0]
        return dotted

    edges: List[Edge] = []
    stack = [ast.parse(path.read_text(), str(path))]
    while stack:
        node = stack.pop()
        stack.extend(_runs(node))
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [resolve(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module
            base = resolve(base)
            if base:
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("importlib.import_module", "import_module",
                                                                        "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                targets = [resolve(node.args[0].value)]
        edges += [(name, target, node.lineno) for target in targets if target]
    return edges


def import_graph(folders: Dict[str, Path]) -> List[Edge]:
    modules = find_modules(folders)
    return [edge for name, (path, is_init) in modules.items() for edge in module_imports(name, path, is_init, modules)]


def cycles(edges: List[Edge]) -> List[Set[str]]:
    """The strongly connected components of more than one module, and modules importing themselves
    (Tarjan's algorithm)."""
    graph: Dict[str, Set[str]] = {}
    for source, target, _ in edges:
        graph.setdefault(source, set()).add(target)
        graph.setdefault(target, set())
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[Set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def face_imports(edges: List[Edge], face: str = FACE) -> List[Edge]:
    """Imports of the package face from inside (the face itself may import the stages)."""
    return [edge for edge in edges if edge[1] == face and edge[0] != face]


def describe(found: List[Set[str]], edges: List[Edge]) -> str:
    lines = []
    for component in found:
        inside = sorted({f"{s} -> {t} (line {n})" for s, t, n in edges if s in component and t in component})
        lines.append(f"circle of {', '.join(sorted(component))}: " + "; ".join(inside))
    return "\n".join(lines)


@pytest.fixture(scope="module")
def edges():
    return import_graph(package_folders(REPO))


def test_the_graph_covers_every_stage(edges):
    """The scanner reads real imports: e.g. the trainer's options -> launch -> runner edges are there."""
    pairs = {(s, t) for s, t, _ in edges}
    assert {("swrr.train.options", "swrr.train.launch"), ("swrr.train.launch", "swrr.train.runner"),
            ("swrr.train.distributed", "swrr.train.runner"), ("swrr.train.compare", "swrr.rundir")} <= pairs
    assert {source.split(".")[1] if "." in source else source for source, _, _ in edges} >= {
        "extract", "train", "predict", "cache", "bundle", "rundir"}


def test_no_import_circle_anywhere(edges):
    found = cycles(edges)
    assert not found, describe(found, edges)


def test_nothing_inside_imports_the_package_face(edges):
    """`swrr/__init__` (the lazy public API) may import the stages; a module inside importing it
    would close a loop through the face. Only submodules such as swrr._version are imported."""
    assert not face_imports(edges), face_imports(edges)


def test_the_scanner_finds_a_circle_in_a_hand_made_package(tmp_path):
    """a -> b at the top, b -> a inside a function through a relative import; c imports the face;
    an import under TYPE_CHECKING and one of a submodule through the face's name do not count."""
    files = {
        "core/__init__.py": "from ._version import VERSION\n",
        "core/_version.py": "VERSION = '1'\n",
        "core/a.py": "from pkg.b import helper\n",
        "core/b.py": textwrap.dedent("""\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from pkg.stage import tool
            def helper():
                from . import a
                return a
            """),
        "core/c.py": "from pkg import VERSION\nfrom pkg import _version\n",
        "stage/__init__.py": "",
        "stage/tool.py": "import importlib\nmod = importlib.import_module('pkg.b')\nfrom .. import _version\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found_edges = import_graph({"pkg": tmp_path / "core", "pkg.stage": tmp_path / "stage"})
    assert cycles(found_edges) == [{"pkg.a", "pkg.b"}]
    assert ("pkg.stage.tool", "pkg.b") in {(s, t) for s, t, _ in found_edges}  # import_module("literal")
    assert ("pkg.b", "pkg.stage.tool") not in {(s, t) for s, t, _ in found_edges}  # TYPE_CHECKING only
    assert [(s, t) for s, t, _ in face_imports(found_edges, "pkg")] == [("pkg.c", "pkg")]
    # closing the loop through the function-local import is what makes the circle
    (tmp_path / "core/b.py").write_text("def helper():\n    return 1\n")
    assert cycles(import_graph({"pkg": tmp_path / "core", "pkg.stage": tmp_path / "stage"})) == []
