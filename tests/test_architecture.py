"""Architecture tests: static checks (with ``ast``, rpnkit is never imported) that keep the
package's layering, its acyclic import graph, short functions and a torch-free command line."""

import ast
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE_DIR = SRC / "rpnkit"
TOP = "rpnkit"

LAYERS = [
    # (module pattern, layer, what it holds)
    ("rpnkit.config", 0, "dataclass configs to and from JSON/YAML"),
    ("rpnkit.modeling.*", 1, "boxes, anchors, matching, NMS, kernels, backbones, RPN, heads"),
    ("rpnkit.data.*", 2, "dataset readers, images, transforms, datasets, batching"),
    ("rpnkit.evaluation.*", 3, "proposal recall, detection mAP, anchor fit"),
    ("rpnkit.engine.*", 4, "training loops, checkpoints, runs of a model over data"),
    ("rpnkit.viz.*", 5, "pictures and the HTML report of a run"),
    ("rpnkit.export.*", 5, "ONNX and torch.export of a model: every export workaround"),
    ("rpnkit.testing", 5, "references for tests and benchmarks (torchvision's Faster R-CNN)"),
    ("rpnkit.demo", 6, "`rpnkit demo`"),
    ("rpnkit.cli.*", 7, "the command line: parses arguments and calls the library"),
    ("rpnkit", 8, "the facade (the top __init__): may import anything"),
    ("rpnkit.__main__", 8, "`python -m rpnkit`: the facade's entry point"),
]
"""The rooms of rpnkit, lowest first; this table mirrors the layering in docs/design.md.

A module may import modules of its own layer or of lower layers, never of a higher one.
A pattern ``pkg.*`` stands for the package ``pkg`` and every module below it; any other
pattern names exactly one module. A module that no row names is an error: give it a room
here and in docs/design.md. As the top ``rpnkit`` is the highest layer, importing it from
inside the package (``import rpnkit``, ``from rpnkit import X``) is forbidden to every module
but ``rpnkit.__main__``.
"""

MAX_FUNCTION_LINES = 80

LONG_FUNCTIONS_ALLOWED_IN = {
    # The Triton kernels of rpnkit/modeling/kernels/: a GPU kernel is written as one
    # function by necessity, so these modules may hold functions of any length.
    "rpnkit.modeling.kernels.match_triton",
    "rpnkit.modeling.kernels.nms_triton",
}


# --- finding and parsing modules -----------------------------------------------------------


def module_name(path: Path) -> str:
    """``src/rpnkit/data/readers.py`` -> ``rpnkit.data.readers``; a package's ``__init__.py``
    is the package itself."""
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def find_modules() -> dict[str, Path]:
    """Every module of rpnkit, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def is_package(module: str) -> bool:
    return find_modules()[module].name == "__init__.py"


# --- the import graph ----------------------------------------------------------------------


def resolve_relative(importer: str, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``importer``."""
    package = importer if is_package(importer) else importer.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 >= len(parts):
        raise ValueError(f"{importer}: relative import beyond the top package")
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{name}" if name else base


def imported_names(tree: ast.Module, importer: str) -> set[str]:
    """The absolute names of the modules that every import statement of a file (module level
    or nested in functions) imports. ``from X import y`` imports the module ``X.y`` when that
    is a module of rpnkit, else the module ``X`` (whose ``y`` it reads)."""
    modules = find_modules()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = resolve_relative(importer, node.level, node.module)
            else:
                base = node.module
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.add(submodule if submodule in modules else base)
    return names


def is_rpnkit(name: str) -> bool:
    return name == TOP or name.startswith(TOP + ".")


@cache
def import_graph() -> dict[str, set[str]]:
    """Module -> the rpnkit modules it imports (self-imports left out). A target may be a
    name that no file defines any more (a broken import): it is kept, by its name."""
    graph = {}
    for module, path in find_modules().items():
        targets = imported_names(parse(path), module)
        graph[module] = {t for t in targets if is_rpnkit(t) and t != module}
    return graph


def layer_of(module: str) -> int | None:
    """The layer of a module under ``LAYERS`` (the most specific row), or None."""
    best = None
    for pattern, layer, _ in LAYERS:
        base = pattern.removesuffix(".*")
        covers = module == base or (pattern.endswith(".*") and module.startswith(base + "."))
        if covers and (best is None or len(base) > len(best[0])):
            best = (base, layer)
    return None if best is None else best[1]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, c, a]``) in every strongly connected component of more than one
    module, by Tarjan's algorithm; edges to names outside ``graph`` are ignored."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node] & graph.keys()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [shortest_cycle(graph, component) for component in components]


def shortest_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component (a
    breadth-first search that stays inside it)."""
    start = min(component)
    parent = {start: None}
    frontier = [start]
    while frontier:
        next_frontier = []
        for node in frontier:
            for succ in sorted(graph[node] & component):
                if succ == start:
                    path = [node]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if succ not in parent:
                    parent[succ] = node
                    next_frontier.append(succ)
        frontier = next_frontier
    raise AssertionError(f"no cycle in the component {sorted(component)}")


# --- functions -----------------------------------------------------------------------------


def function_lengths(tree: ast.Module) -> list[tuple[str, int]]:
    """(qualified name, lines from the ``def`` line to the last line, decorators excluded) of
    every function and method of a file; nested functions are counted on their own."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                found.append((name, child.end_lineno - child.lineno + 1))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def torch_imports(tree: ast.Module) -> list[int]:
    """Lines of the statements of a file that import ``torch`` or a module below it."""

    def is_torch(name: str | None) -> bool:
        return name is not None and (name == "torch" or name.startswith("torch."))

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        if any(is_torch(name) for name in names):
            lines.append(node.lineno)
    return sorted(lines)


# --- the tests -----------------------------------------------------------------------------


def test_imports_only_go_downwards():
    problems = []
    for module in sorted(find_modules()):
        if layer_of(module) is None:
            problems.append(f"{module} is in no layer: give it a row in LAYERS")
    for importer, targets in sorted(import_graph().items()):
        for imported in sorted(targets):
            a, b = layer_of(importer), layer_of(imported)
            if a is None or b is None:
                continue
            # The top `rpnkit` is layer 8, so this also forbids `import rpnkit` and
            # `from rpnkit import X` to every module but `rpnkit.__main__`.
            if b > a:
                problems.append(f"{importer} -> {imported} (layer {a} -> {b})")
    assert not problems, "imports that go up the layers:\n" + "\n".join(problems)


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_functions_stay_short():
    too_long = []
    for module, path in sorted(find_modules().items()):
        if module in LONG_FUNCTIONS_ALLOWED_IN:
            continue
        for name, lines in function_lengths(parse(path)):
            if lines > MAX_FUNCTION_LINES:
                too_long.append(f"{module}:{name} ({lines} lines)")
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(too_long)


def test_cli_modules_only_parse_and_call():
    cli_dir = PACKAGE_DIR / "cli"
    assert cli_dir.is_dir(), f"{cli_dir} is not a directory: the command line should be a package"
    offenders = []
    for path in sorted(cli_dir.rglob("*.py")):
        lines = torch_imports(parse(path))
        if lines:
            offenders.append(f"{module_name(path)} (line {', '.join(map(str, lines))})")
    assert not offenders, "CLI modules that import torch:\n" + "\n".join(offenders)
