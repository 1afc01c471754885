"""The package's modules import one another in layers, never in a circle (docs/design.md).

Read from the source with `ast`, lazy imports inside functions included: a circle that only
closes at call time is still a circle to a reader. Nothing is imported, so this takes
milliseconds."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"hashing": ROOT / "hashing", "hashing.cli": ROOT / "cli", "hashing.indexes": ROOT / "indexes"}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.glob("*.py"):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's own modules that `path` imports anywhere in it (top level or inside a function)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in known and m not in (name, "hashing")}   # `hashing` itself: the API façade


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_among_the_packages_modules():
    known = modules()
    graph = {name: imports(name, path, set(known)) for name, path in known.items()}
    assert "hashing.recipes" in graph and "hashing.train" in graph
    assert cycles(graph) == []


def test_recipes_build_their_configs_from_schedule_not_train():
    known = modules()
    assert "hashing.train" not in imports("hashing.recipes", known["hashing.recipes"], set(known))
    assert "hashing.train" not in imports("hashing.schedule", known["hashing.schedule"], set(known))


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def layer_table() -> dict[str, int]:
    """module -> layer number, from the table under "## The layers" in docs/design.md."""
    text = (ROOT / "docs" / "design.md").read_text()
    section = text[text.index("## The layers"):]
    section = section[:section.index("\n## ", 1)]
    layers = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0][:1].isdigit():
            number = int(cells[0].split()[0])
            for name in re.findall(r"`([\w.]+)`", cells[1]):
                layers["hashing" if name == "hashing" else f"hashing.{name}"] = number
    return layers


def test_every_module_sits_in_one_layer_of_the_design_doc():
    known, table = modules(), layer_table()
    missing = sorted(set(known) - set(table) - {"hashing", "hashing.cli"})
    assert missing == [], f"give these modules a row in the layer table of docs/design.md: {missing}"
    stale = sorted(set(table) - set(known))
    assert stale == [], f"docs/design.md names modules that do not exist: {stale}"


def test_modules_import_only_from_their_own_layer_or_those_above():
    known, table = modules(), layer_table()
    upward = [f"{name} (layer {table[name]}) imports {dep} (layer {table[dep]})"
              for name, path in known.items() if name in table
              for dep in sorted(imports(name, path, set(known))) if dep in table and table[dep] > table[name]]
    assert upward == [], "\n".join(upward)
