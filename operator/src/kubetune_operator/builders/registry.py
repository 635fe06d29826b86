"""Every kind's builders, in the one place that enumerates them; the rest looks a kind up here."""

from __future__ import annotations

from kubetune_operator.api import Resource
from kubetune_operator.builders import dataset, evaluation, training
from kubetune_operator.builders.kind import KindBuilder

BUILDERS: tuple[KindBuilder, ...] = (dataset.KIND, training.KIND, evaluation.KIND)
_BY_MODEL = {builder.model: builder for builder in BUILDERS}


def builder_of(model: type[Resource]) -> KindBuilder:
    try:
        return _BY_MODEL[model]
    except KeyError:
        raise TypeError(f"no builder for {model.__name__}") from None
