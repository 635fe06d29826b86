"""Every spec the API accepts gives a config the trainer accepts (docs/contracts.md §7).

Hypothesis draws specs from the CRD schema that the pydantic models generate; those the schema and
the CEL rules accept (`validation.check`, what `kubectl apply` would say) go through the operator's
builders, and the trainer must take what comes out: a FineTuneJob's TrainConfig, an EvalRun's
EvalConfig, a PreferenceDataset's `data prepare` flags. A spec refused only by the trainer would
fail in its pod, after the GPUs were scheduled; the fix for one belongs in the API (a bound or a
CEL rule whose message names the field), where the user hears of it at `kubectl apply`.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, assume, example, given, note, settings
from hypothesis import strategies as st

from kubetune_operator.api import API_VERSION, KINDS
from kubetune_operator.api.crd import openapi_schema
from kubetune_operator.api.evalrun import EvalRunSpec
from kubetune_operator.api.validation import check, validate
from kubetune_operator.builders import dataset, evaluation, graph, training, workload
from kubetune_operator.builders.settings import OperatorSettings
from kubetune_operator.errors import ValidationFailed
from kubetune_trainer.data import options as prepare_options
from kubetune_trainer.data.format_plan import FormatPlan
from kubetune_trainer.errors import ConfigError
from kubetune_trainer.eval.config import parse_config as eval_config_from_dict
from kubetune_trainer.recipes.config import config_from_dict as train_config_from_dict

SETTINGS = OperatorSettings()
# Spec fields no builder puts into the config (pod placement, credentials, Job limits, the promote
# Job's settings): drawing them would only slow the search down.
NOT_IN_CONFIG = {
    "FineTuneJob": {"scheduling", "storage", "queueName", "suspend", "activeDeadlineSeconds", "backoffLimit", "pod"},
    "EvalRun": {"scheduling", "storage", "queueName", "activeDeadlineSeconds", "promotion", "resources", "pod"},
    "PreferenceDataset": {"scheduling", "storage", "activeDeadlineSeconds", "resources"},
}
# `has(self.a) != has(self.b)`: the CEL idiom for "exactly one of a or b".
EXACTLY_ONE = re.compile(r"^has\(self\.(\w+)\) != has\(self\.(\w+)\)$")


def contract(draws: int):
    """Enough draws to reach every enum and bound, few enough for seconds; derandomized, so a run
    repeats the last one exactly. No explain phase: a failure's minimal example says enough."""
    return settings(
        max_examples=draws,
        derandomize=True,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
    )


def _bounded(value: str, schema: dict[str, Any]) -> bool:
    return schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 1 << 30)


def _merged(parts: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    return {k: v for part in parts for k, v in part.items()}


def _object(schema: dict[str, Any], omit: frozenset[str]) -> st.SearchStrategy:
    """An object's required fields, a draw of its optional ones, and exactly one field of each pair
    its CEL rules say goes alone (`has(self.a) != has(self.b)`), so that most draws are accepted."""
    properties = {k: v for k, v in schema["properties"].items() if k not in omit}
    pairs = [
        match.groups()
        for rule in schema.get("x-kubernetes-validations", ())
        if (match := EXACTLY_ONE.match(rule["rule"]))
    ]
    paired = {name for pair in pairs for name in pair}
    required = set(schema.get("required", ()))
    parts = [
        st.fixed_dictionaries(
            {k: from_schema(v) for k, v in properties.items() if k in required},
            optional={k: from_schema(v) for k, v in properties.items() if k not in required | paired},
        ),
        *(st.one_of(*(st.fixed_dictionaries({name: from_schema(properties[name])}) for name in pair)) for pair in pairs),
    ]
    return st.tuples(*parts).map(_merged)


def from_schema(schema: dict[str, Any], omit: frozenset[str] = frozenset()) -> st.SearchStrategy:
    """Values the (structural) schema allows: types, enums, bounds, patterns, lengths and sizes."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        if "properties" in schema:
            return _object(schema, omit)
        values = from_schema(schema.get("additionalProperties") or {"type": "string"})
        keys = st.from_regex(r"[a-z][a-z0-9.-]{0,12}", fullmatch=True)
        return st.dictionaries(keys, values, max_size=min(schema.get("maxProperties", 2), 2))
    if kind == "array":
        low = schema.get("minItems", 0)
        return st.lists(from_schema(schema["items"]), min_size=low, max_size=min(schema.get("maxItems", low + 2), low + 2))
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: _bounded(s, schema))
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 24), 24))
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "number":
        return st.floats(
            min_value=schema.get("minimum"),
            max_value=schema.get("maximum"),
            exclude_min=bool(schema.get("exclusiveMinimum")),
            exclude_max=bool(schema.get("exclusiveMaximum")),
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "boolean":
        return st.booleans()
    raise AssertionError(f"the schema uses a type this strategy does not draw: {schema}")


def specs(kind: str) -> st.SearchStrategy:
    return from_schema(spec_schema(kind), omit=frozenset(NOT_IN_CONFIG[kind]))


def spec_schema(kind: str) -> dict[str, Any]:
    return openapi_schema(KINDS[kind])["properties"]["spec"]


def document(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "x", "namespace": "ns"}, "spec": spec}


def accepted(kind: str, spec: dict[str, Any]):
    """The typed resource when the API would accept the spec: the CRD schema and CEL rules (what
    `kubectl apply` checks), then the operator's model (regexes are compiled where the operator reads
    the spec: CEL knows only RE2). The draw is discarded otherwise."""
    doc = document(kind, spec)
    assume(check(doc) == [])
    try:
        resource = validate(doc)
    except ValidationFailed:
        assume(False)
    note(yaml.safe_dump(doc, sort_keys=False))
    return resource


def as_the_pod_reads_it(config: dict[str, Any]) -> Any:
    """The config through the ConfigMap's YAML, as the trainer reads it."""
    return yaml.safe_load(workload.dump_config(config))


def inputs_by_layout(resource):
    """Other resources' outputs where the default layout puts them (as `kubetune render` predicts)."""
    return graph.predicted(resource, {}, SETTINGS)


# -- FineTuneJob → TrainConfig --------------------------------------------------------------------


MINIMAL_JOB = {"method": "sft", "baseModel": "s3://models/base", "dataset": {"uri": "s3://data/prepared"}}


@contract(200)
@given(specs("FineTuneJob"))
# Each once passed the CRD and failed in the pod: QLoRA under the ZeRO-3 that 8 GPUs imply, a warmup
# of every step, a merged copy of a full fine-tune.
@example({**MINIMAL_JOB, "peft": {"type": "qlora"}})
@example({**MINIMAL_JOB, "hyperparameters": {"warmupRatio": 1.0}})
@example({**MINIMAL_JOB, "peft": {"type": "full"}, "output": {"mergeAdapter": True}})
def test_every_accepted_finetunejob_gives_a_train_config_the_trainer_accepts(spec):
    job = accepted("FineTuneJob", spec)
    inputs = training.resolve_inputs(job, inputs_by_layout(job))
    config = as_the_pod_reads_it(training.trainer_config(job, SETTINGS, inputs))
    try:
        train_config_from_dict(config)
    except ConfigError as exc:
        pytest.fail(f"the API accepts this FineTuneJob, the trainer refuses it: {exc}")


# -- EvalRun → EvalConfig -------------------------------------------------------------------------


# A gate's metric: a metric's name, or a sub-value (docs/contracts.md §7).
SUB_VALUES = {
    "repetition": ["", ".ngram_rate", ".longest_span", ".no_eos_rate", ".repeater_rate"],
    "length": ["", ".tokens", ".chars"],
}
MOSTLY = st.sampled_from([True, True, True, False])


@st.composite
def evalrun_specs(draw) -> dict[str, Any]:
    """An EvalRun spec whose cross-references mostly resolve, so that the CEL rules keep most draws:
    one baseline among candidates of distinct names, gates on drawn metrics and candidates."""
    spec = draw(specs("EvalRun"))
    candidates = spec["candidates"]
    for index, candidate in enumerate(candidates):
        candidate["name"] = f"c{index}"
        candidate["baseline"] = False
        if "adapter" in candidate and "model" not in candidate and draw(MOSTLY):
            del candidate["adapter"]
    draw(st.sampled_from(candidates))["baseline"] = True
    engine = spec.get("engine", {})
    if engine.get("beamWidth", 1) > 1 and draw(MOSTLY):
        engine["temperature"] = 0.0
    if engine.get("tensorParallel", 1) > 1 and engine.get("type", "vllm") != "vllm" and draw(MOSTLY):
        del engine["tensorParallel"]
    metrics = spec.get("metrics")
    for index, metric in enumerate(metrics or []):
        metric["name"] = f"m{index}"
        if metric["type"] != "rubric":
            metric.pop("rules", None)
            metric.pop("judge", None)
        elif ("rules" in metric) == ("judge" in metric) and draw(MOSTLY):
            if "rules" in metric:
                del metric["judge"]
            else:
                rules = spec_schema("EvalRun")["properties"]["metrics"]["items"]["properties"]["rules"]
                metric["rules"] = draw(from_schema(rules))
        # Mostly what the type takes, sometimes not: the API must refuse what the evaluator would.
        if draw(MOSTLY):
            if metric["type"] in ("regex", "judgement"):
                metric.setdefault("pattern", "x")
            else:
                metric.pop("pattern", None)
    if not metrics:
        metrics = [m.model_dump(by_alias=True) for m in EvalRunSpec.model_fields["metrics"].default]
    for gate in spec.get("gates", []):
        metric = draw(st.sampled_from(metrics))
        own = SUB_VALUES.get(metric["type"], [""])
        gate["metric"] = metric["name"] + draw(st.sampled_from(own) if draw(MOSTLY) else st.sampled_from(["", ".rate", ".tokens"]))
        if "candidate" in gate:
            gate["candidate"] = draw(st.sampled_from([c["name"] for c in candidates]))
    return spec


# EvalRun specs are the largest: each draw costs about ten times a FineTuneJob.
@contract(100)
@given(evalrun_specs())
def test_every_accepted_evalrun_gives_an_eval_config_the_evaluator_accepts(spec):
    run = accepted("EvalRun", spec)
    inputs = evaluation.resolve_inputs(run, inputs_by_layout(run))
    config = as_the_pod_reads_it(evaluation.eval_config(run, SETTINGS, inputs))
    try:
        eval_config_from_dict(config)
    except ConfigError as exc:
        pytest.fail(f"the API accepts this EvalRun, the evaluator refuses it: {exc}")


# -- PreferenceDataset → data prepare ------------------------------------------------------------


@st.composite
def preferencedataset_specs(draw) -> dict[str, Any]:
    """A PreferenceDataset spec that mostly names a source, and mostly reads no LLaMA-Factory
    mapping unless its format takes one, so that the CEL rules keep most draws."""
    spec = draw(specs("PreferenceDataset"))
    schema = spec_schema("PreferenceDataset")["properties"]
    if not spec.get("sources") and draw(MOSTLY):
        spec["sources"] = draw(st.lists(from_schema(schema["sources"]["items"]), min_size=1, max_size=2))
    if spec.get("split", {}).get("testFraction", 0) > 0.9 and draw(MOSTLY):
        spec["split"]["testFraction"] = 0.1
    if spec.get("format") in ("chat-sft", "defects-raw", "replay") and draw(MOSTLY):
        spec["kind"] = "sft"
    takes_mapping = spec.get("format", "auto") in ("auto", "llamafactory", "alpaca", "sharegpt")
    if "llamafactory" in spec and not takes_mapping and draw(MOSTLY):
        del spec["llamafactory"]
    mapping = spec.get("llamafactory")
    if mapping is not None and draw(MOSTLY):
        kind = spec.get("kind", "preference")
        if "datasetInfo" in mapping:
            mapping.setdefault("dataset", "d")
        mapping["ranking"] = kind == "preference"
        if kind != "sft":
            mapping.get("columns", {}).pop("tools", None)
    return spec


@contract(200)
@given(preferencedataset_specs())
def test_every_accepted_preferencedataset_gives_flags_data_prepare_accepts(spec):
    pds = accepted("PreferenceDataset", spec)
    argv = dataset.command(pds, workload.output_uri(pds, SETTINGS))
    assert argv[:3] == ["kubetune-trainer", "data", "prepare"]
    parser = argparse.ArgumentParser(exit_on_error=False)
    prepare_options.add_arguments(parser)
    try:
        options = prepare_options.from_args(parser.parse_args(argv[3:]))
        if not options.dataset_info:
            # Everything but reading a dataset_info.json (the user's file) is decided by the flags.
            FormatPlan(options)
    except (ConfigError, argparse.ArgumentError) as exc:
        pytest.fail(f"the API accepts this PreferenceDataset, data prepare refuses it: {exc}")



@pytest.mark.parametrize(
    ("kind", "strategy"),
    [("FineTuneJob", specs("FineTuneJob")), ("EvalRun", evalrun_specs()), ("PreferenceDataset", preferencedataset_specs())],
)
def test_most_draws_are_specs_the_api_accepts(kind, strategy):
    """The properties above hold for the draws the API accepts; were those rare, they would hold
    for next to nothing (hypothesis gives up quietly once assumptions fail too often). Hypothesis
    mixes literals from the modules already imported into its draws, so the share accepted depends
    on what ran before in the process: 60 draws, and strategies that follow the rules, leave room."""
    verdicts = []

    @settings(max_examples=60, derandomize=True, deadline=None, phases=[Phase.generate], database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(spec):
        verdicts.append(check(document(kind, spec)) == [])

    draw()
    assert sum(verdicts) >= len(verdicts) / 4, f"{sum(verdicts)} of {len(verdicts)} draws accepted"
