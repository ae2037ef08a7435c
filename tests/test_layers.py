"""The package is a house with floors: every import runs down, none runs up, and no modules import each
other in a circle (imports inside functions included). A new module goes on a floor here."""

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


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every guidedmae module `path` imports, at its top or inside functions (`from a import b` counts
    as a.b when a.b is a module, else as a)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                module = module_name(path)
                package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = PACKAGE.parent.joinpath(*candidate.split(".")).with_suffix(".py").is_file() or (
                    PACKAGE.parent.joinpath(*candidate.split("."), "__init__.py").is_file()
                )
                found.add(candidate if is_module else base)
    return {name for name in found if name.startswith("guidedmae.")}


def unit_of(module: str) -> str:
    return module.split(".")[1]


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_floor():
    units = {
        unit_of(module_name(path))
        for path in source_files()
        if path.parent != PACKAGE or path.stem != "__init__"
    }
    assert units <= set(FLOOR), f"units without a floor: {sorted(units - set(FLOOR))}"


def test_no_import_runs_up():
    upward = []
    for path in source_files():
        module = module_name(path)
        if module == "guidedmae":  # the package's face re-exports the public API
            continue
        for imported in imported_modules(path):
            if imported != "guidedmae" and FLOOR[unit_of(imported)] > FLOOR[unit_of(module)]:
                upward.append(f"{module} -> {imported}")
    assert not upward, "imports that run up a floor:\n" + "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle():
    graph = {module_name(path): imported_modules(path) for path in source_files()}
    graph.pop("guidedmae")
    state, circles = {}, []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                circles.append(" -> ".join([*trail[trail.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*trail, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "circles:\n" + "\n".join(circles)


def test_no_source_file_is_longer_than_the_limit():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in source_files()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_the_layering_rule_sees_an_upward_import(tmp_path):
    """The check itself: a data module importing the engine is caught (and a relative import resolved)."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from guidedmae.engine.fit import fit\n\ndef f():\n    from guidedmae.infra import files\n"
    )
    assert imported_modules(source) == {"guidedmae.engine.fit", "guidedmae.infra.files"}
    assert FLOOR[unit_of("guidedmae.engine.fit")] > FLOOR[unit_of("guidedmae.data.sources")]
