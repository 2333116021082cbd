"""The package's shape, enforced: layers import only downward, no import cycles, small modules and functions.

The import graph is built from the source with ``ast`` (nothing is imported): every ``import``/``from ... import``
anywhere in a module counts, including the ones inside functions (a lazy import is still an import) and under
``if TYPE_CHECKING:``; relative imports are resolved against the importing module's package, and a name imported
from a package counts as its submodule when one of that name exists. The sandbox's helper scripts import their
siblings as top-level modules (``import _codec``: they run inside the sandbox, not as part of the package); such an
import resolves to the sibling file (a standard-library name such as ``math`` never does).

Also checked: no module imports another module's private names (``from .x import _helper``: a helper two modules
share is public, in the lower one). Not counted: the implicit import of a parent package's ``__init__`` when a
submodule is imported, and imports by string (``importlib.import_module``: the public API's lazy ``__getattr__`` and
the CLI's command table).

The layer table below is the README's "Architecture" diagram. A module must sit in exactly one layer; a new module
outside every layer fails the test until it is placed, so the table cannot silently fall behind the tree.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "posttrain_llm"
APP = "posttrain_llm.online_rl_trainer"

#: Lowest first. A module may import modules of its own layer (without cycles) and of the layers below it, never
#: of a layer above. Each entry is a module prefix under ``posttrain_llm.online_rl_trainer``; the longest match wins.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaf helpers: errors, names, machine probes, tokens, atomic files, checkpoints",
     ("core.common", "core.files")),
    ("data, rewards, sandbox, models, algorithm math",
     ("core.data", "core.rewards", "core.sandbox", "core.models", "core.algorithms", "core.agents",
      "core.value_model")),  # core/value_model.py: the README's old path of models/critic.py, a re-export
    ("config and presets", ("core.config", "core.config_input", "core.presets", "core.trl_arguments")),
    ("training backends", ("core.backends",)),
    ("trainer and evaluator", ("core.trainer", "core.training", "core.inference", "core.eval")),
    ("CLI and examples", ("cli", "examples")),
]
#: Package roots that hold no code of their own (empty or lazy ``__init__``): outside the layers.
ROOTS = {PACKAGE, APP, f"{APP}.core"}

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
#: Modules allowed past MAX_MODULE_LINES, with the reason. Keep this short; prefer splitting.
LONG_MODULE_ALLOWED: dict[str, str] = {
    f"{APP}.core.sandbox._codec": "the wire protocol runs inside the sandbox as a top-level script (``import _codec``) "
                                  "and on the host as a package module; a split would need an import shim in both worlds",
}


# ------------------------------------------------------------------------------------------------ the graph
def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``package`` under ``root``."""
    modules = {}
    for path in sorted((root / package.replace(".", "/")).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_edges(root: Path, package: str) -> dict[str, dict[str, int]]:
    """module -> {imported module of the same package: line of the first such import}."""
    modules = module_files(root, package)
    edges: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            found: list[str] = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    sibling = _sibling(module, is_package, alias.name, modules)
                    found.append(sibling or _known_prefix(alias.name, modules) or "")
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_from(module, is_package, node)
                if node.level == 0 and node.module and "." not in node.module:
                    base = _sibling(module, is_package, node.module, modules) or base
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.append(sub if sub in modules else (_known_prefix(base, modules) or ""))
            for target in found:
                if target and target != module:
                    targets.setdefault(target, node.lineno)
        edges[module] = targets
    return edges


def _sibling(module: str, is_package: bool, name: str, modules: dict[str, Path]) -> str | None:
    """``import _codec`` from a sandbox helper script: the file next to the importer, if there is one."""
    if "." in name or name in sys.stdlib_module_names:
        return None
    parent = module if is_package else module.rsplit(".", 1)[0]
    candidate = f"{parent}.{name}"
    return candidate if candidate in modules and not name.startswith(PACKAGE) else None


def find_cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # recursion depth is bounded by the number of modules (~100)
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(cycles, key=lambda c: (-len(c), c))


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]], app: str = APP) -> int | None:
    """Index of the layer whose longest prefix matches ``module`` (None when no layer claims it)."""
    best: tuple[int, int] | None = None
    for i, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            full = f"{app}.{prefix}"
            if module == full or module.startswith(full + "."):
                if best is None or len(full) > best[1]:
                    best = (i, len(full))
    return None if best is None else best[0]


def upward_edges(edges: dict[str, dict[str, int]], layers, roots=frozenset(ROOTS), app: str = APP) -> list[str]:
    """``"a:line -> b (layer x -> layer y)"`` for every import from a lower layer into a higher one."""
    bad = []
    for src, targets in sorted(edges.items()):
        src_layer = layer_of(src, layers, app)
        for dst, line in sorted(targets.items()):
            dst_layer = layer_of(dst, layers, app)
            if src in roots or dst in roots or src_layer is None or dst_layer is None:
                continue
            if dst_layer > src_layer:
                bad.append(f"{src}:{line} -> {dst} ({layers[src_layer][0]!r} imports {layers[dst_layer][0]!r})")
    return bad


def private_imports(root: Path, package: str) -> list[str]:
    """``"a:line imports b._name"`` for every private name (``_x``, not a module) imported from another module."""
    modules = module_files(root, package)
    found = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = _resolve_from(module, is_package, node)
            if _known_prefix(base, modules) is None or not base.startswith(package):
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and f"{base}.{alias.name}" not in modules:
                    found.append(f"{module}:{node.lineno} imports {base}.{alias.name}")
    return found


def function_lengths(path: Path) -> list[tuple[str, int, int]]:
    """(qualified name, first line, number of lines) of every function and method in ``path``."""
    out = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                out.append((name, child.lineno, child.end_lineno - child.lineno + 1))
                walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(ast.parse(path.read_text(), filename=str(path)), "")
    return out


# ------------------------------------------------------------------------------------------------ the tests
def test_no_import_cycles():
    cycles = find_cycles(import_edges(REPO_ROOT, PACKAGE))
    assert not cycles, "import cycles (move the shared piece down instead of importing lazily):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_every_module_has_a_layer():
    unplaced = [m for m in module_files(REPO_ROOT, PACKAGE) if m not in ROOTS and layer_of(m, LAYERS) is None]
    assert not unplaced, f"modules outside every layer (add them to LAYERS in {Path(__file__).name}): {unplaced}"


def test_layers_import_only_downward():
    bad = upward_edges(import_edges(REPO_ROOT, PACKAGE), LAYERS)
    assert not bad, "imports from a lower layer into a higher one:\n" + "\n".join(bad)


def test_no_module_imports_another_modules_private_names():
    bad = private_imports(REPO_ROOT, PACKAGE)
    assert not bad, "private names used across modules (make them public where they are shared):\n" + "\n".join(bad)


def test_modules_stay_small():
    too_long = []
    for module, path in module_files(REPO_ROOT, PACKAGE).items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES and module not in LONG_MODULE_ALLOWED:
            too_long.append(f"{module}: {lines} lines")
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them by role): {too_long}"


def test_functions_stay_short():
    too_long = [f"{module}.{name} (line {line}): {n} lines"
                for module, path in module_files(REPO_ROOT, PACKAGE).items()
                for name, line, n in function_lengths(path) if n > MAX_FUNCTION_LINES]
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


def test_allow_list_names_existing_modules():
    modules = module_files(REPO_ROOT, PACKAGE)
    assert all(m in modules for m in LONG_MODULE_ALLOWED), "LONG_MODULE_ALLOWED names a module that is gone"


# ------------------------------------------------------------------------------- the checker checks itself
def _write_package(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    _write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low/__init__.py": "",
        "pkg/low/a.py": "def f():\n    from ..high import b\n    return b\n",
        "pkg/high/__init__.py": "",
        "pkg/high/b.py": "from pkg.low import a\n",
        "pkg/high/c.py": "from . import b\nimport pkg.low.a\n",
    })
    edges = import_edges(tmp_path, "pkg")
    assert edges["pkg.low.a"] == {"pkg.high.b": 2}
    assert edges["pkg.high.c"] == {"pkg.high.b": 1, "pkg.low.a": 2}
    assert find_cycles(edges) == [["pkg.high.b", "pkg.low.a"]]


def test_checker_finds_an_upward_edge_and_accepts_downward_ones(tmp_path):
    _write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low/__init__.py": "",
        "pkg/low/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.high.b import B\n",
        "pkg/high/__init__.py": "",
        "pkg/high/b.py": "from ..low.a import *\nclass B: ...\n",
    })
    layers = [("low", ("low",)), ("high", ("high",))]
    bad = upward_edges(import_edges(tmp_path, "pkg"), layers, roots=frozenset({"pkg"}), app="pkg")
    assert bad == ["pkg.low.a:3 -> pkg.high.b ('low' imports 'high')"]


def test_checker_finds_the_real_tree_would_fail_on_a_new_cycle(tmp_path):
    """Copy the package, add one lazy upward import, and the checks fail (the README's Architecture note)."""
    import shutil

    shutil.copytree(REPO_ROOT / PACKAGE, tmp_path / PACKAGE)
    rewards_base = tmp_path / PACKAGE / "online_rl_trainer/core/rewards/base.py"
    rewards_base.write_text(rewards_base.read_text() + "\n\ndef _lazy():\n    from ..trainer import OnlineRLTrainer\n")
    trainer = tmp_path / PACKAGE / "online_rl_trainer/core/trainer.py"
    assert "rewards" in trainer.read_text()  # the trainer imports the rewards, so the new edge closes a circle
    edges = import_edges(tmp_path, PACKAGE)
    assert any(f"{APP}.core.rewards.base" in c and f"{APP}.core.trainer" in c for c in find_cycles(edges))
    assert any(e.startswith(f"{APP}.core.rewards.base:") and f"-> {APP}.core.trainer " in e
               for e in upward_edges(edges, LAYERS))


def test_checker_finds_a_private_name_imported_from_another_module(tmp_path):
    _write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "_helper = 1\npublic = 2\n",
        "pkg/b.py": "from .a import public\nfrom . import a\n\ndef f():\n    from pkg.a import _helper\n",
    })
    assert private_imports(tmp_path, "pkg") == ["pkg.b:5 imports pkg.a._helper"]


def test_checker_measures_function_lengths(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("class C:\n    def f(self):\n        def g():\n            pass\n        return 1\n\n"
                    "async def h():\n    pass\n")
    assert function_lengths(path) == [("C.f", 2, 4), ("C.f.g", 3, 2), ("h", 7, 2)]


@pytest.mark.parametrize("module, expected", [
    (f"{APP}.core.config", 2), (f"{APP}.core.rewards.base", 1), (f"{APP}.examples.train_math", 5),
    (f"{APP}.core.common.errors", 0), (f"{APP}.nowhere", None),
])
def test_layer_lookup(module, expected):
    assert layer_of(module, LAYERS) == expected
