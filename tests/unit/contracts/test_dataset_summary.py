"""The data-prepare pod's termination summary, as the operator reads it (contracts §5)."""

import json

from kubetune_operator.api.preferencedataset import PreferenceDatasetStatus
from kubetune_operator.handlers.preferencedataset import dataset_status
from kubetune_trainer.data.cli import summary
from kubetune_trainer.data.options import PrepareOptions
from kubetune_trainer.data.prepare import prepare
from kubetune_trainer.progress import ProgressReporter, write_termination_summary
from tests.unit.trainer.data.conftest import pref, write_jsonl
from tests.unit.trainer.data.test_cli import bulky_manifest


def status_of(manifest: dict, output: str, log: str) -> tuple[dict, dict]:
    message = json.loads(write_termination_summary(summary(manifest, output), log))
    status = dataset_status(message, "s3://default")
    PreferenceDatasetStatus.model_validate(status)
    return message, status


def test_a_prepared_datasets_split_warning_reaches_the_status(tmp_path):
    # "a" asks two questions; "b" and "c" each ask one of them twice, so both must go to test.
    rows = [pref("q1", subtype="a"), pref("q2", subtype="a"), pref("q1", "good 1", subtype="b"),
            pref("q1", "good 2", subtype="b"), pref("q2", "good 1", subtype="c"), pref("q2", "good 2", subtype="c")]
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    output = str(tmp_path / "out")
    options = PrepareOptions(kind="preference", output=output, sources=(str(source),), test_fraction=0.5,
                             stratify_by="subtype")
    manifest = prepare(options, ProgressReporter())
    _, status = status_of(manifest, output, str(tmp_path / "log"))
    assert status["warnings"] == manifest["warnings"]
    assert status["warnings"][0].startswith("subtype 'a' has no row in train")
    assert status["strata"]["a"] == {"train": 0, "test": 2}


def test_many_long_warnings_fit_the_message_and_the_status_unchanged(tmp_path):
    warnings = [f"subtype 'é-{i:03d}' has no row in train: " + "x" * 2000 for i in range(40)]
    message, status = status_of(bulky_manifest(warnings), "s3://b/ds", str(tmp_path / "log"))
    assert message["warnings"] and status["warnings"] == message["warnings"]
    assert status["warnings"][0].startswith("subtype 'é-000' has no row in train")
