"""Fixtures: the loaded chart and every variant of chart_render.VARIANTS rendered once."""

from __future__ import annotations

import helm_python as helm
import pytest
from chart_render import CHART, VARIANTS, manifests, render_templates


@pytest.fixture(scope="session")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def rendered(chart) -> dict[str, list[dict]]:
    """Each variant's rendered objects, by variant name."""
    return {name: manifests(render_templates(chart, values)) for name, values in VARIANTS.items()}
