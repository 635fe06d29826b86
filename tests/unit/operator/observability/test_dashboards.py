"""The dashboards generator: the committed JSON is its output, and the dashboards are well formed.

The PromQL inside them is checked against promtool and the exposed metric names in
tests/unit/charts/test_promql.py.
"""

import json
from pathlib import Path

import pytest

from kubetune_operator.observability import dashboards

COMMITTED = Path(__file__).resolve().parents[4] / "charts" / "kubetune" / "dashboards"
GRID_WIDTH = 24


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    return {name: json.loads(text) for name, text in dashboards.render().items()}


def test_the_committed_dashboards_are_the_generated_ones():
    committed = {path.name: path.read_text(encoding="utf-8") for path in sorted(COMMITTED.glob("*.json"))}
    assert committed == dashboards.render(), (
        "charts/kubetune/dashboards is stale: "
        "python -m kubetune_operator.observability.dashboards --write charts/kubetune/dashboards"
    )


def test_the_command_writes_every_dashboard(tmp_path, capsys):
    assert dashboards.main(["--write", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(dashboards.DASHBOARDS)
    assert capsys.readouterr().out.count(".json") == len(dashboards.DASHBOARDS)


def test_the_three_views_exist_with_distinct_uids(rendered):
    titles = {d["uid"]: d["title"] for d in rendered.values()}
    assert titles == {
        "kubetune-overview": "kubetune / Overview",
        "kubetune-training": "kubetune / Training job",
        "kubetune-eval": "kubetune / EvalRun",
    }


def cells(panel: dict) -> set[tuple[int, int]]:
    pos = panel["gridPos"]
    return {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_panels_have_unique_ids_and_do_not_overlap(rendered, name):
    panels = rendered[name]["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= GRID_WIDTH, panel["title"]
        assert not cells(panel) & taken, f"{panel['title']} overlaps another panel"
        taken |= cells(panel)


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_every_query_goes_to_the_selected_prometheus(rendered, name):
    dashboard = rendered[name]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        for target in panel["targets"]:
            assert target["datasource"] == source


def test_the_training_view_shows_what_the_issue_asks_for(rendered):
    titles = {p["title"] for p in rendered["kubetune-training.json"]["panels"]}
    assert {"Loss", "Reward margin", "Tokens per second", "GPU memory", "Progress", "ETA"} <= titles
