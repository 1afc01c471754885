"""The package's layers (hashing.LAYERS): who may import whom, and which commands load torch.

Imports are read from the source with `ast`, lazy imports inside functions included (a circle that
only closes at call time is still a circle to a reader); nothing is imported, so those checks take
milliseconds. The start-up checks run the commands in a fresh interpreter."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import hashing

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"hashing": ROOT / "hashing", "hashing.cli": ROOT / "cli", "hashing.indexes": ROOT / "indexes"}
TOP = {"hashing", "hashing.__main__"}          # the façade and `python -m hashing`: outside the layers


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
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
    return {m for m in out if m in known and m != name and m not in TOP}


def package_of(module: str) -> str | None:
    """hashing.model.network -> 'model'; hashing.indexes.milvus.lease -> 'indexes'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and module not in TOP else None


def layer_of(package: str) -> int:
    return next(i for i, layer in enumerate(hashing.LAYERS) if package in layer)


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


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, set(known)) for name, path in known.items()}


def test_every_module_is_in_a_package_of_the_layers_and_every_layer_exists():
    known = modules()
    assert "hashing.dedup.verify" in known and "hashing.indexes.milvus.index" in known
    packages = {package_of(m) for m in known} - {None}
    listed = {p for layer in hashing.LAYERS for p in layer}
    assert packages - listed == set(), f"add these packages to hashing.LAYERS: {sorted(packages - listed)}"
    assert listed - packages == set(), f"hashing.LAYERS names packages that do not exist: {sorted(listed - packages)}"
    loose = sorted(m for m in known if m.count(".") == 1 and m not in TOP and not (ROOT / "hashing" / m.split(".")[1]).is_dir()
                   and m.split(".")[1] not in ("cli", "indexes"))
    assert loose == [], f"modules outside every package: {loose}"


def test_packages_import_only_from_their_own_or_earlier_layers_and_never_a_sibling():
    bad = []
    for name, deps in graph().items():
        mine = package_of(name)
        if mine is None:
            continue
        for dep in sorted(deps):
            theirs = package_of(dep)
            if theirs is None or theirs == mine:
                continue
            if layer_of(theirs) > layer_of(mine):
                bad.append(f"{name} (layer {layer_of(mine)}) imports {dep} (layer {layer_of(theirs)}): upward")
            elif layer_of(theirs) == layer_of(mine):
                bad.append(f"{name} imports its sibling {dep}")
    assert bad == [], "\n".join(bad)


def test_no_import_circle_among_the_packages_modules():
    assert cycles(graph()) == []


def test_the_checks_find_a_cycle_an_upward_import_and_a_sibling():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("core") < layer_of("indexes") < layer_of("model") < layer_of("cli")
    assert layer_of("dedup") == layer_of("workflows") == layer_of("evaluate")
    assert package_of("hashing.indexes.milvus.lease") == "indexes" and package_of("hashing") is None


def torch_at_module_level(path: Path) -> bool:
    for node in ast.parse(path.read_text()).body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if any(n == "torch" or n.startswith("torch.") or n.startswith("torchvision") for n in names):
            return True
    return False


def test_only_model_and_train_import_torch_at_module_level():
    offenders = sorted(name for name, path in modules().items()
                       if torch_at_module_level(path) and package_of(name) not in hashing.TORCH_AT_MODULE_LEVEL)
    assert offenders == []
    assert torch_at_module_level(modules()["hashing.model.network"])     # the check can see one


NO_TORCH = r"""
import sys, numpy as np
from click.testing import CliRunner
from hashing.cli.main import cli as main
from hashing.indexes import IndexInfo, ModelRecord, create
where = sys.argv[1]
ix = create(where, IndexInfo(bits=64, model=ModelRecord("run", "f" * 16, 64)))
ix.add(np.zeros((3, 8), np.uint8), np.arange(3), ["a", "b", "c"])
ix.save(); ix.close()
assert "torch" not in sys.modules, "creating an index loaded torch"
for args in (["--help"], ["info", where], ["info", where, "--items", "--json"], ["remove", "--index", where, "1"],
             ["remove", "--index", where, "--source", "c"]):
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, (args, r.output)
    assert "torch" not in sys.modules, f"hashing {' '.join(args)} loaded torch"
print("no torch")
"""


@pytest.mark.system
def test_help_info_and_remove_load_no_torch_in_a_fresh_interpreter(tmp_path):
    p = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path / "idx")], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "no torch", p.stdout + p.stderr
