"""The import contract: arrows point down (funcdl <- interop <- bench), and no first-party import cycles.

The core imports only jax/flax/optax/numpy and its own modules at import time;
``interop`` and ``bench`` register what they add through entry points. These
checks read the source (AST) and start a fresh interpreter, so a back-arrow
added anywhere fails here.
"""
import ast
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("funcdl", "interop", "bench")
# What each first-party package must never import (at any depth, lazily or not).
FORBIDDEN = {"funcdl": ("interop", "bench", "torch", "tensorflow", "keras", "tf_keras")}


def imported_modules(source):
    """(line, module) of every import in ``source``, however deep: statements and ``import_module("...")``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def back_arrows(package, source):
    """The imports in ``source`` (a file of ``package``) that point up or at a framework the package must not use."""
    forbidden = FORBIDDEN.get(package, ())
    return [(line, module) for line, module in imported_modules(source) if module.split(".")[0] in forbidden]


def test_the_contract_check_sees_a_back_arrow():
    source = "import jax\nfrom interop import pytorch\n\ndef f():\n    import bench.suite\n" \
             "    importlib.import_module('torch')\n"
    assert back_arrows("funcdl", source) == [(2, "interop"), (5, "bench.suite"), (6, "torch")]
    assert back_arrows("funcdl", "from funcdl import nn\nimport numpy as np\n") == []


def test_the_core_imports_no_satellite_and_no_framework():
    offenders = {f"{path.relative_to(ROOT)}:{line}": module for path in sorted((ROOT / "funcdl").rglob("*.py"))
                 for line, module in back_arrows("funcdl", path.read_text())}
    assert offenders == {}


def _loaded_after(statements):
    """Top-level packages loaded in a fresh interpreter after running ``statements``."""
    code = f"import sys, json; {statements}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


@pytest.mark.subprocess
def test_import_funcdl_loads_neither_frameworks_nor_satellites():
    loaded = _loaded_after("import funcdl, funcdl.cli, funcdl.io.formats")
    # heavy libraries are imported only by the functions that need them (TFDS and scikit-learn by
    # funcdl.data's loaders, matplotlib by plots and reports)
    heavy = {"tensorflow_datasets", "sklearn", "matplotlib"}
    assert loaded & ({"torch", "tensorflow", "keras", "interop", "bench"} | heavy) == set()


@pytest.mark.subprocess
def test_the_cli_with_every_command_registered_loads_no_framework():
    loaded = _loaded_after("import funcdl.cli, funcdl.io.formats; funcdl.cli.build_parser(); "
                           "funcdl.io.formats.registered()")
    assert {"interop", "bench"} <= loaded and loaded & {"torch", "tensorflow", "keras"} == set()


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _first_party_imports(path, modules):
    """First-party modules ``path`` imports, at any depth (``from a import b`` counts as ``a.b`` when that is a
    module)."""
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            edges |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            named = {f"{node.module}.{alias.name}" for alias in node.names}
            edges |= (named & modules) or ({node.module} & modules)
    return edges


def import_graph():
    """{module: first-party modules it imports} for funcdl, interop and bench."""
    paths = {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    return {name: _first_party_imports(path, set(paths)) - {name} for name, path in paths.items()}


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target, stack + [target])
                if cycle:
                    return cycle
        state[node] = "done"
        return None
    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_the_cycle_check_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_first_party_import_cycles():
    assert find_cycle(import_graph()) is None


@pytest.mark.parametrize("group, names", [
    ("funcdl.commands", {"train", "sweep", "convert", "inspect", "compare", "bench"}),
    ("funcdl.formats", {"torch", "keras", "keras-weights", "savedmodel"}),
])
def test_satellites_register_through_entry_points(group, names):
    from importlib.metadata import entry_points
    assert {point.name for point in entry_points(group=group)} == names


PUBLIC_MODULES = [
    "funcdl", "funcdl.nn", "funcdl.losses", "funcdl.optim", "funcdl.models", "funcdl.data", "funcdl.errors",
    "funcdl.io", "funcdl.io.formats", "funcdl.train", "funcdl.train.parallel", "funcdl.train.precision",
    "funcdl.train.checkpoint", "funcdl.train.monitor", "funcdl.train.sweep", "funcdl.train.callbacks",
    "funcdl.cli", "interop.pytorch", "interop.keras", "interop.tensorflow", "interop.parity", "interop.layouts",
    "interop.frameworks",
]


def _public_functions(module):
    names = getattr(module, "__all__", None) or [name for name in vars(module) if not name.startswith("_")]
    for name in names:
        value = getattr(module, name)
        if inspect.isfunction(value) and value.__module__.split(".")[0] in PACKAGES:
            yield f"{module.__name__}.{name}", value


def test_the_public_api_is_typed():
    untyped = []
    for module_name in PUBLIC_MODULES:
        for name, function in _public_functions(importlib.import_module(module_name)):
            signature = inspect.signature(function)
            missing = [p.name for p in signature.parameters.values() if p.annotation is inspect.Parameter.empty]
            if missing or signature.return_annotation is inspect.Signature.empty:
                untyped.append(f"{name}({', '.join(missing)}){'' if missing else ' (return)'}")
    assert untyped == []
