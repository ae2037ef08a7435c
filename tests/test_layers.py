"""The package is a house with floors: every import runs down, none runs up, and no modules import each
other in a circle (imports inside functions included, and modules loaded by importlib). Nothing inside the
package imports its face (`guidedmae/__init__.py`, which re-exports the public API from several floors).
A new module goes on a floor here. Each rule is also shown failing on a planted example."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "guidedmae"

# Bottom to top: a unit may import itself and the units below it, never one above.
FLOORS = [
    ("infra",),
    ("metrics",),
    ("data",),
    ("models",),
    ("losses", "tasks"),
    ("masking",),
    ("pictures", "report"),
    ("config",),
    ("engine",),
    ("study",),
    ("ui",),
    ("commands",),
    ("cli", "__main__"),
]
FLOOR = {unit: number for number, units in enumerate(FLOORS) for unit in units}
MAX_LINES = 400
FACE = "guidedmae"
# Modules that load other packages by a name given at run time (never one of ours): what they load.
DYNAMIC_LOADERS = {"guidedmae.infra.trackers": "the tracker packages, wandb or mlflow"}
DYNAMIC_IMPORTS = {("importlib", "import_module"), ("", "__import__")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _dynamic_import(node: ast.AST) -> ast.expr | None:
    """The module argument of an importlib.import_module(...) or __import__(...) call, else None."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    function = node.func
    if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
        name = (function.value.id, function.attr)
    elif isinstance(function, ast.Name):
        name = ("", function.id)
    else:
        return None
    return node.args[0] if name in DYNAMIC_IMPORTS else None


def imported_modules(path: Path, module: str | None = None) -> set[str]:
    """Every guidedmae module `path` imports, at its top or inside functions (`from a import b` counts
    as a.b when a.b is a module, else as a), or loads by importlib with a constant name. A dynamic import
    of a name the check cannot read counts as "?" unless the module is a known loader of other packages."""
    found = set()
    module = module or module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        argument = _dynamic_import(node)
        if argument is not None:
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                found.add(argument.value)
            elif module not in DYNAMIC_LOADERS:
                found.add("guidedmae.?")
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = PACKAGE.parent.joinpath(*candidate.split(".")).with_suffix(".py").is_file() or (
                    PACKAGE.parent.joinpath(*candidate.split("."), "__init__.py").is_file()
                )
                found.add(candidate if is_module else base)
    return {name for name in found if name == FACE or name.startswith(f"{FACE}.")}


def unit_of(module: str) -> str:
    return module.split(".")[1]


def import_graph() -> dict[str, set[str]]:
    """{module: the guidedmae modules it imports} over the package, its face left out."""
    graph = {module_name(path): imported_modules(path) for path in source_files()}
    graph.pop(FACE)
    return graph


def rule_breaks(graph: dict[str, set[str]]) -> list[str]:
    """Imports of the face, dynamic imports the check cannot read, and imports that run up a floor."""
    breaks = []
    for module, imports in sorted(graph.items()):
        for imported in sorted(imports):
            if imported == FACE:
                breaks.append(f"{module} -> {FACE} (the package's face: import the module that defines it)")
            elif imported == f"{FACE}.?":
                breaks.append(f"{module} -> a module named at run time (give importlib a constant name)")
            elif FLOOR[unit_of(imported)] > FLOOR[unit_of(module)]:
                breaks.append(f"{module} -> {imported} (up from floor {FLOOR[unit_of(module)]})")
    return breaks


def circles(graph: dict[str, set[str]]) -> list[str]:
    """Every circle of imports found by a depth-first walk, as 'a -> b -> a'."""
    state, found = {}, []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                found.append(" -> ".join([*trail[trail.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*trail, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_floor():
    units = {
        unit_of(module_name(path))
        for path in source_files()
        if path.parent != PACKAGE or path.stem != "__init__"
    }
    assert units <= set(FLOOR), f"units without a floor: {sorted(units - set(FLOOR))}"


def test_no_import_runs_up_nor_reaches_the_face():
    breaks = rule_breaks(import_graph())
    assert not breaks, "imports that break the floors:\n" + "\n".join(breaks)


def test_no_modules_import_each_other_in_a_circle():
    found = circles(import_graph())
    assert not found, "circles:\n" + "\n".join(found)


def test_no_source_file_is_longer_than_the_limit():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in source_files()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_the_rules_catch_planted_breaks(tmp_path):
    """The checks themselves, on planted modules: an upward import (also inside a function), an import
    of the face, importlib with a constant name and with one the check cannot read, and a circle."""
    source = tmp_path / "probe.py"
    source.write_text(
        "import importlib\nfrom guidedmae import MultiMAE\nfrom guidedmae.engine.fit import fit\n\n"
        "def f(name):\n    from guidedmae.infra import files\n"
        "    importlib.import_module('guidedmae.study.plan')\n    return __import__(name)\n"
    )
    imports = imported_modules(source, "guidedmae.data.probe")
    assert imports == {
        "guidedmae", "guidedmae.engine.fit", "guidedmae.infra.files", "guidedmae.study.plan", "guidedmae.?"
    }  # fmt: skip
    breaks = rule_breaks({"guidedmae.data.probe": imports})
    assert breaks == [
        "guidedmae.data.probe -> guidedmae (the package's face: import the module that defines it)",
        "guidedmae.data.probe -> a module named at run time (give importlib a constant name)",
        "guidedmae.data.probe -> guidedmae.engine.fit (up from floor 2)",
        "guidedmae.data.probe -> guidedmae.study.plan (up from floor 2)",
    ]
    assert imported_modules(source, "guidedmae.infra.trackers") == imports - {"guidedmae.?"}
    planted = {
        "guidedmae.masking.a": {"guidedmae.masking.b"},
        "guidedmae.masking.b": {"guidedmae.masking.c"},
        "guidedmae.masking.c": {"guidedmae.masking.a", "guidedmae.infra.files"},
        "guidedmae.infra.files": set(),
    }
    assert circles(planted) == [
        "guidedmae.masking.a -> guidedmae.masking.b -> guidedmae.masking.c -> guidedmae.masking.a"
    ]
    assert rule_breaks(planted) == [] and circles({"guidedmae.infra.files": set()}) == []
