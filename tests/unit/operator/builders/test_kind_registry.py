"""Nothing generic names a kind in the builders or the local runner: ordering, predicted inputs,
rendering and `kubetune run` go through each kind's `KindBuilder`, which its own builder module
makes; builders/registry.py is the one place that enumerates them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kubetune_operator.builders as builders
import kubetune_operator.localrun as localrun
from kubetune_operator.api import KINDS, Resource
from kubetune_operator.builders.registry import BUILDERS, builder_of

BUILDERS_DIR = Path(builders.__file__).parent
# The modules that build one kind's children; promotion.py is the EvalRun's promote Job.
KIND_MODULES = {builder.references.__module__.rsplit(".", 1)[1] for builder in BUILDERS} | {"promotion"}
GENERIC = sorted(
    [p for p in BUILDERS_DIR.glob("*.py") if p.stem not in KIND_MODULES | {"__init__", "registry"}]
    + list(Path(localrun.__file__).parent.glob("*.py")),
    key=lambda p: (p.parent.name, p.name),
)
KIND_NAMES = {model.__name__ for model in KINDS.values()}
FORBIDDEN_IMPORTS = KIND_NAMES | {f"kubetune_operator.builders.{m}" for m in KIND_MODULES} | KIND_MODULES


def imported_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names |= {node.module or "", *(f"{node.module}.{a.name}" for a in node.names), *(a.name for a in node.names)}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def kind_strings(tree: ast.AST) -> set[str]:
    """String constants that are a kind's name, docstrings aside: `kind_name == "FineTuneJob"` is a
    dispatch on kind as much as an isinstance is."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    } & KIND_NAMES


@pytest.mark.parametrize("path", GENERIC, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_generic_module_names_no_kind(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert not imported_names(tree) & FORBIDDEN_IMPORTS
    assert not kind_strings(tree)


def test_every_kind_has_builders_made_in_its_own_module():
    assert {builder.model for builder in BUILDERS} == set(KINDS.values())
    for model in KINDS.values():
        builder = builder_of(model)
        functions = [builder.references, builder.build, builder.rerun_inputs, builder.resolve_inputs]
        assert {f.__module__ for f in functions} - {"kubetune_operator.builders.kind"} == {
            builder.references.__module__
        }


def test_a_model_without_builders_is_named():
    with pytest.raises(TypeError, match="no builder for Resource"):
        builder_of(Resource)
