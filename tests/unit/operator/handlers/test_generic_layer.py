"""Nothing generic names a kind: the reconcile loop, its kopf entry points, children, outcomes,
dependencies and publishing import no kind's model or module. A kind says everything about itself
in its own module, through the `Kind` it registers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kubetune_operator.handlers as handlers
from kubetune_operator.api import KINDS
from kubetune_operator.handlers.reconcile import REGISTERED

HANDLERS = Path(handlers.__file__).parent
KIND_MODULES = {model.singular for model in KINDS.values()}
GENERIC = sorted(p for p in HANDLERS.glob("*.py") if p.stem not in KIND_MODULES | {"__init__"})
KIND_NAMES = {model.__name__ for model in KINDS.values()} | {f"kubetune_operator.handlers.{m}" for m in KIND_MODULES}


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            names |= {node.module or "", *(f"{node.module}.{a.name}" for a in node.names), *(a.name for a in node.names)}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


@pytest.mark.parametrize("path", GENERIC, ids=lambda p: p.name)
def test_a_generic_module_imports_no_kind(path):
    assert not imported_names(path) & KIND_NAMES


def test_every_kind_is_registered_from_its_own_module():
    assert set(REGISTERED) == {model.plural for model in KINDS.values()}
    for kind in REGISTERED.values():
        assert kind.reconcile.__module__ == f"kubetune_operator.handlers.{kind.singular}"


def test_no_module_of_the_operator_is_called_common():
    assert not list(HANDLERS.parent.rglob("common.py"))
