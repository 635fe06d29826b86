from __future__ import annotations

import pytest

from kubetune_trainer.errors import ConfigError
from kubetune_trainer.eval.config import EvalConfig, load_config, parse_config
from kubetune_trainer.exitcodes import ExitCode


def minimal(**changes) -> dict:
    data = {
        "output": "file:///tmp/out",
        "test_set": "file:///tmp/test.json",
        "candidates": [
            {"name": "base", "model": "file:///m", "baseline": True},
            {"name": "dpo", "adapter": "file:///a"},
        ],
    }
    return data | changes


def error_of(data) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "config.yaml")
    assert caught.value.exit_code == ExitCode.BAD_CONFIG
    return caught.value.message


def test_defaults_follow_the_contract():
    config = parse_config(minimal())
    assert (config.engine, config.max_new_tokens, config.temperature, config.beam_width) == (
        "hf",
        256,
        0.0,
        1,
    )
    assert (config.bootstrap_samples, config.confidence, config.bootstrap_seed) == (1000, 0.95, 0)
    assert config.stratify_by == "subtype" and config.test_split == "test"
    assert [m.type for m in config.metrics] == ["exact_match", "normalized_match", "repetition", "length"]
    assert config.baseline.name == "base"


def test_the_first_candidate_is_the_baseline_when_none_is_marked():
    data = minimal(candidates=[{"name": "a", "model": "file:///m"}, {"name": "b", "model": "file:///n"}])
    assert parse_config(data).baseline.name == "a"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"temprature": 0.5}, "config.yaml: temprature: unknown field"),
        ({"candidates": [{"name": "x", "model": "m", "lora": "a"}]}, "candidates[0].lora: unknown field"),
        ({"candidates": [{"name": "x"}]}, "candidates[0]: a candidate needs `model`, `adapter` or both"),
        ({"metrics": [{"type": "regex"}]}, "metrics[0].pattern: Field required"),
        (
            {"metrics": [{"type": "regex", "pattern": "(a"}]},
            "metrics[0].pattern: not a valid regular expression",
        ),
        ({"metrics": [{"type": "bleu"}]}, "metrics[0]: Input tag 'bleu'"),
        ({"metrics": [{"type": "rubric", "name": "x"}]}, "exactly one of `rules` or `judge`"),
        (
            {
                "metrics": [
                    {"type": "rubric", "name": "x", "judge": {"model": "m", "prompt_template": "grade it"}}
                ]
            },
            "metrics[0].judge.prompt_template: the template must contain {answer}",
        ),
        (
            {"gates": [{"metric": "bleu", "comparator": ">=", "threshold": 1}]},
            "gates[0].metric: 'bleu' is not a metric",
        ),
        (
            {"gates": [{"metric": "exact_match", "candidate": "nobody", "comparator": ">=", "threshold": 1}]},
            "gates[0].candidate: no candidate is named 'nobody'",
        ),
        ({"gates": [{"metric": "exact_match", "comparator": "=>", "threshold": 1}]}, "gates[0].comparator"),
        ({"engine": "hf", "tensor_parallel": 2}, "tensor_parallel: the hf engine runs on one device"),
        ({"metrics": [{"type": "length"}, {"type": "length"}]}, "metrics[1].name: 'length' is used twice"),
        ({"beam_width": 4, "temperature": 0.7}, "beam_width: beam search needs temperature 0"),
        (
            {
                "candidates": [{"name": "only", "model": "m"}],
                "gates": [
                    {
                        "metric": "exact_match",
                        "comparator": ">=",
                        "threshold": 0,
                        "relative_to_baseline": True,
                    }
                ],
            },
            "gates[0]: the baseline cannot be compared with itself",
        ),
        (
            {"metrics": [{"type": "exact_match", "name": "predict"}]},
            "metrics[0].name: 'predict' names a column of every candidate's answers",
        ),
    ],
)
def test_mistakes_name_the_field(changes, expected):
    assert expected in error_of(minimal(**changes))


def test_two_baselines_and_duplicate_names_are_refused():
    both = [{"name": "a", "model": "m", "baseline": True}, {"name": "b", "model": "m", "baseline": True}]
    assert "more than one candidate has `baseline: true`" in error_of(minimal(candidates=both))
    twice = [{"name": "a", "model": "m"}, {"name": "a", "model": "n"}]
    assert "candidates[1].name: 'a' is used twice" in error_of(minimal(candidates=twice))


def test_gates_name_metrics_or_their_sub_values():
    config = parse_config(
        minimal(
            gates=[
                {"metric": "repetition", "comparator": "<=", "threshold": -0.1, "relative_to_baseline": True},
                {"metric": "repetition.no_eos_rate", "comparator": "<=", "threshold": 0.05},
                {"metric": "length", "comparator": "<", "threshold": 500, "use_confidence_bound": True},
            ]
        )
    )
    assert [config.column_of(g.metric) for g in config.gates] == [
        "repetition.ngram_rate",
        "repetition.no_eos_rate",
        "length.tokens",
    ]


def test_the_operators_rendering_of_rubric_metrics_loads():
    config = parse_config(
        minimal(
            metrics=[
                {
                    "name": "overreach",
                    "type": "rubric",
                    "rules": [{"pattern": "(确诊|保证)", "expect": "no_match"}],
                },
                {
                    "name": "hallucination",
                    "type": "rubric",
                    "judge": {"model": "s3://b/judge", "prompt_template": "{prompt}\n{answer}\n{reference}"},
                },
            ]
        )
    )
    assert config.metrics[0].rules[0].expect == "no_match"
    assert config.metrics[1].judge.score_pattern == r"(?<![\d.])([01](?:\.\d+)?)(?!\.?\d)"


def test_yaml_files_load_and_syntax_errors_name_the_line(tmp_path):
    good = tmp_path / "config.yaml"
    good.write_text(
        "output: file:///tmp/out\ntest_set: t.json\ncandidates:\n  - {name: base, model: m}\n",
        encoding="utf-8",
    )
    assert isinstance(load_config(good), EvalConfig)
    bad = tmp_path / "bad.yaml"
    bad.write_text("output: x\ncandidates: [\n  {name: a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping of fields"):
        load_config(listing)


def test_every_example_evalrun_renders_to_a_config_the_trainer_loads():
    """The operator's builders write the config this command reads (contracts §7)."""
    from pathlib import Path

    from kubetune_operator.builders import evaluation, graph
    from kubetune_operator.builders.settings import OperatorSettings
    from kubetune_operator.cli.documents import load_documents, validate_all

    settings = OperatorSettings(artifact_root="s3://artifacts/kubetune")
    examples = sorted((Path(__file__).resolve().parents[4] / "examples").rglob("*.yaml"))
    resources = validate_all(load_documents(examples))
    known = {graph.key(r): r for r in resources}
    evalruns = [r for r in resources if r.kind == "EvalRun"]
    assert evalruns
    for evalrun in evalruns:
        rendered = evaluation.eval_config(
            evalrun, settings, evaluation.resolve_inputs(evalrun, graph.predicted(evalrun, known, settings))
        )
        config = parse_config(rendered, evalrun.metadata.name)
        assert [c.name for c in config.candidates] == [c.name for c in evalrun.spec.candidates]
        assert all(config.column_of(g.metric) for g in config.gates)
