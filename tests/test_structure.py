"""The house rules of docs/architecture.md, checked on the source: imports only run down the
layers (so there are no circles between parts), no import circle inside a part, and files and
functions stay small. Run alone with ``python -m pytest tests/test_structure.py``."""

from __future__ import annotations

import ast
import collections
from pathlib import Path
from typing import Dict, List, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "mask2former"

# Lowest first. A module may import from its own part or from a part of a lower layer only.
LAYERS: List[Set[str]] = [
    {"__init__", "files", "hub", "coco", "visualize", "memory_reuse"},  # __init__: lazy names
    {"_config_base"},
    {"backbone_config"},
    {"_model_config_checks"},
    {"config"},
    {"processing", "checkpoint"},
    {"data", "loss"},
    {"modeling"},
    {"inference"},
    {"evaluation", "export", "serve"},
    {"training"},
    {"predictor"},
    {"commands"},
    {"cli"},
    {"__main__"},
]
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
# Exceptions to the size rules, each with its reason.
LONG_FILES: Dict[str, str] = {}
LONG_FUNCTIONS: Dict[str, str] = {}


def _modules() -> Dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> Set[str]:
    """Every mask2former module ``name`` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] == "mask2former")
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(part: str) -> int:
    for i, layer in enumerate(LAYERS):
        if part in layer:
            return i
    raise AssertionError(f"mask2former/{part} is in no layer of tests/test_structure.py")


def _graph() -> Dict[str, Set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        graph[name] = {t for t in _imports(name, path) if t in modules and t != name}
    return graph


def test_imports_only_run_down_the_layers():
    wrong = []
    for source, targets in _graph().items():
        for target in targets:
            a, b = _part(source), _part(target)
            if a != b and _layer(b) >= _layer(a):
                wrong.append(f"{source} -> {target}")
    assert not wrong, "imports that do not run down the layers:\n" + "\n".join(sorted(wrong))


def _cycle(graph: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = collections.defaultdict(int)  # 0 new, 1 on the path, 2 done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state[nxt] == 1:
                return path[path.index(nxt) :] + [nxt]
            if state[nxt] == 0:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if state[node] == 0:
            found = visit(node)
            if found:
                return found
    return []


def test_no_import_circles():
    graph = {
        # A package's __init__ re-exports its modules: importing it is importing them.
        name: {t for t in targets if not name.startswith(t + ".")}
        for name, targets in _graph().items()
    }
    cycle = _cycle(graph)
    assert not cycle, "import circle: " + " -> ".join(cycle)


def _sizes() -> Tuple[List[Tuple[str, int]], List[Tuple[str, int]]]:
    files, functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        text = path.read_text()
        files.append((rel, len(text.splitlines())))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((f"{rel}:{node.name}", node.end_lineno - node.lineno + 1))
    return files, functions


def test_files_and_functions_are_small():
    files, functions = _sizes()
    long_files = [
        f"{n} ({k} lines)" for n, k in files if k > MAX_FILE_LINES and n not in LONG_FILES
    ]
    long_functions = [
        f"{n} ({k} lines)"
        for n, k in functions
        if k > MAX_FUNCTION_LINES and n not in LONG_FUNCTIONS
    ]
    assert not long_files, f"files over {MAX_FILE_LINES} lines: {long_files}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_the_exceptions_are_still_needed():
    files, functions = dict(_sizes()[0]), dict(_sizes()[1])
    stale = [n for n in LONG_FILES if files.get(n, 0) <= MAX_FILE_LINES]
    stale += [n for n in LONG_FUNCTIONS if functions.get(n, 0) <= MAX_FUNCTION_LINES]
    assert not stale, f"no longer over the limit, remove from the exceptions: {stale}"


def test_the_checks_can_fail():
    """The circle finder and the layer rule see a planted circle and an upward import."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []
    assert _layer("predictor") > _layer("inference") > _layer("processing") > _layer("files")
