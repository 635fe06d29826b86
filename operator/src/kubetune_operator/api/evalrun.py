"""EvalRun: replay a test set through candidates, score them against a baseline, gate, promote."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field

from kubetune_operator.api.pod import PodOptions
from kubetune_operator.api.resource import (
    FieldName,
    GpuResourceName,
    ImageRef,
    Model,
    ModelUri,
    ObjectMeta,
    Quantity,
    Regex,
    Resource,
    ResourceName,
    Scheduling,
    StatusBase,
    Storage,
    Uri,
    cel,
    immutable_fields,
)

MetricName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9_]*$")]


def _one_group(pattern: str) -> str:
    if re.compile(pattern).groups != 1:
        raise ValueError("use exactly one capture group, around the score")
    return pattern


class TestSet(Model):
    """The prompts to replay and their reference answers."""

    cel_rules: ClassVar = [
        cel("has(self.preferenceDataset) != has(self.uri)", "set exactly one of preferenceDataset or uri")
    ]

    preference_dataset: ResourceName | None = None
    """A PreferenceDataset in this namespace; its split is replayed (reference = chosen or assistant answer)."""

    uri: Uri | None = None
    """A prepared dataset directory, a canonical JSONL file, or a LLaMA-Factory test.json replay file
    (text, standard_answer)."""

    split: Literal["test", "train"] = "test"
    """Split of a prepared dataset to replay."""

    max_samples: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    """Replay at most this many prompts (the first N)."""

    system_prompt: Annotated[str, Field(max_length=16384)] | None = None
    """System message put before every prompt."""


class Candidate(Model):
    """A model to evaluate: a FineTuneJob's result, or a model with an optional adapter."""

    cel_rules: ClassVar = [
        cel("has(self.fineTuneJob) != has(self.model)", "set exactly one of fineTuneJob or model"),
        cel("!has(self.adapter) || has(self.model)", "adapter goes with model", field_path=".adapter"),
    ]

    name: ResourceName
    """Name of the candidate in reports and gates."""

    fine_tune_job: ResourceName | None = None
    """A FineTuneJob in this namespace: its adapter on its true base (or its full model)."""

    use_merged: bool = False
    """With fineTuneJob: evaluate its merged model (output.mergeAdapter) instead of base + adapter."""

    model: ModelUri | None = None
    """A base or merged model."""

    adapter: Uri | None = None
    """A LoRA adapter for model. Refused when its recorded true base is another model."""

    baseline: bool = False
    """The candidate the others are compared with. Exactly one candidate is the baseline."""


class Engine(Model):
    """Inference engine and decoding. Both engines take the same prompts and chat templates."""

    cel_rules: ClassVar = [
        cel("self.type == 'vllm' || self.tensorParallel == 1", "tensorParallel needs engine vllm",
            field_path=".tensorParallel"),
        cel("self.beamWidth == 1 || self.temperature == 0.0", "beam search needs temperature 0",
            field_path=".beamWidth"),
    ]

    type: Literal["vllm", "hf"] = "vllm"
    """vllm (GPU: one engine serving the base and every adapter) or hf (transformers, batched; CPU too)."""

    tensor_parallel: Annotated[int, Field(ge=1, le=16)] = 1
    """GPUs the vLLM engine shards the model across; the eval pod requests this many."""

    max_new_tokens: Annotated[int, Field(ge=1, le=131072)] = 512
    """Longest answer generated."""

    temperature: Annotated[float, Field(ge=0.0, le=5.0)] = 0.0
    """Sampling temperature; 0 is greedy."""

    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    """Nucleus sampling threshold."""

    beam_width: Annotated[int, Field(ge=1, le=32)] = 1
    """Beam search width (1 = no beam search)."""

    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    """Prompts per batch (hf engine)."""

    max_model_len: Annotated[int, Field(ge=16, le=1_048_576)] | None = None
    """Context length of the vLLM engine (default: the model's)."""

    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    """Sampling seed."""


class RubricRule(Model):
    """One rule of a rule-scored rubric metric: a regex that must (or must not) match the answer."""

    pattern: Regex
    """Regular expression searched in the answer."""

    expect: Literal["match", "no_match"] = "match"
    """Whether the answer passes when the pattern matches or when it does not."""


class Judge(Model):
    """A judge model that scores answers through the same engine."""

    model: ModelUri
    """The judge model."""

    prompt_template: Annotated[
        str,
        Field(
            min_length=1,
            max_length=16384,
            json_schema_extra={
                "x-kubernetes-validations": [
                    {"rule": "self.contains('{answer}')", "message": "must contain {answer} (and may use {prompt} and {reference})"}
                ]
            },
        ),
    ]
    """Template with {prompt}, {answer} and {reference}; the judge answers with a score."""

    # A 0..1 number standing alone: not the 1 of "15" nor the 0 of "2023".
    score_pattern: Annotated[Regex, AfterValidator(_one_group)] = r"(?<![\d.])([01](?:\.\d+)?)(?!\.?\d)"
    """Regex whose one capture group is the score (0..1)."""


class Metric(Model):
    """A metric computed for every candidate, with a paired-bootstrap confidence interval."""

    cel_rules: ClassVar = [
        cel(
            "!(self.type in ['regex', 'judgement']) || has(self.pattern)",
            "metrics of type regex and judgement need pattern",
            field_path=".pattern",
        ),
        cel(
            "!has(self.pattern) || self.type in ['regex', 'judgement']",
            "pattern applies only to metrics of type regex and judgement",
            field_path=".pattern",
        ),
        cel(
            "self.type != 'rubric' || has(self.rules) != has(self.judge)",
            "a rubric metric needs exactly one of rules or judge",
        ),
        cel(
            "self.type == 'rubric' || (!has(self.rules) && !has(self.judge))",
            "rules and judge apply only to type rubric",
        ),
    ]

    name: MetricName
    """Name in reports and gates (snake_case)."""

    type: Literal[
        "exact_match", "normalized_match", "contains", "regex", "judgement", "repetition", "length", "rubric"
    ]
    """exact_match / normalized_match / contains: against the reference answer; regex: the answer matches
    pattern; judgement: the pattern's first group (e.g. 判断:(是|否)) equals the reference's (accuracy);
    repetition: repeated n-gram rate, longest repeated span and answers that never reach end-of-sequence;
    length: answer length; rubric: rules or a judge model (pass, overreach, hallucination, red flags)."""

    pattern: Regex | None = None
    """Regular expression for regex and judgement."""

    rules: Annotated[list[RubricRule], Field(min_length=1, max_length=32)] | None = None
    """Rubric by rules: the answer passes when every rule holds."""

    judge: Judge | None = None
    """Rubric by a judge model."""


class Gate(Model):
    """A condition on a candidate's metric that must hold for promotion."""

    name: MetricName | None = None
    """Name in status (default: <metric>_<comparator>)."""

    metric: Annotated[str, Field(min_length=1, max_length=127, pattern=r"^[a-z][a-z0-9_.]*$")]
    """Metric to test: a metric name, or a metric's sub-value such as repetition.no_eos_rate."""

    candidate: ResourceName | None = None
    """Candidate to test (default: every candidate but the baseline)."""

    comparator: Literal[">=", ">", "<=", "<"]
    """How value compares with threshold."""

    threshold: float
    """Absolute threshold, or a delta when relativeToBaseline."""

    relative_to_baseline: bool = False
    """Test candidate minus baseline instead of the candidate's value."""

    use_confidence_bound: bool = False
    """Test the conservative end of the confidence interval (bootstrap.confidence) instead of the point
    estimate."""


class PullRequest(Model):
    """Promotion by review: the commit goes to a branch of its own, kubetune/promote-<serving name>-<first 8
    characters of the EvalRun's UID>, started from `branch`, and a pull (merge) request into `branch` is opened
    through the forge's API with the Secret's `token`. Nothing is pushed when `branch` already holds the
    promotion (the request was merged)."""

    provider: Literal["github", "gitlab", "gitea"]
    """The forge: github (GitHub and GitHub Enterprise Server), gitlab, gitea (Gitea and Forgejo)."""

    api_url: Annotated[str, Field(max_length=256, pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")] | None = None
    """The forge's API root. Default, from the repository URL: https://api.github.com for github.com,
    https://<host>/api/v3 (GitHub Enterprise), https://<host>/api/v4 (GitLab), https://<host>/api/v1 (Gitea)."""


class Promotion(Model):
    """Where a passing adapter is recorded for GitOps (Argo CD, Flux)."""

    cel_rules: ClassVar = [
        cel("!has(self.pullRequest) || self.repository.matches('^(https://[^/]+/|ssh://[^/]+/|git@[^:]+:)[^/]+/.+$')",
            "a pull request needs a repository URL with an owner (or group) and a name", field_path=".pullRequest"),
    ]

    repository: Annotated[
        str, Field(max_length=512, pattern=r"^(https://[A-Za-z0-9.-]+(:[0-9]+)?/[A-Za-z0-9._~/-]+|git@[A-Za-z0-9.-]+:[A-Za-z0-9._~/-]+|ssh://[A-Za-z0-9@.-]+(:[0-9]+)?/[A-Za-z0-9._~/-]+)$",
                    json_schema_extra={"x-kubernetes-validations": [{"rule": "!self.contains('..')", "message": "must not contain '..'"}]})
    ]
    """Git repository URL (https://, ssh:// or git@host:path)."""

    branch: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")] = "main"
    """Branch to commit to; a branch other than the deployed one allows a review flow."""

    path: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$",
                               json_schema_extra={"x-kubernetes-validations": [{"rule": "!self.contains('..')", "message": "must not contain '..'"}]})] = "adapters"
    """Directory in the repository for promotion records."""

    secret_name: ResourceName
    """Secret with `token` (HTTPS, optional `username`) or `ssh-privatekey` (optional `known_hosts`).
    Only the promote pod mounts it."""

    author: Annotated[str, Field(max_length=256, pattern=r"^[^<>\n]+ <[^<>\s]+@[^<>\s]+>$")] = (
        "kubetune <kubetune@kubetune.dev>"
    )
    """Commit author, "Name <email>"."""

    candidate: ResourceName | None = None
    """Candidate to promote (default: the only non-baseline candidate)."""

    serving_name: ResourceName | None = None
    """Adapter name in vLLM's --lora-modules (default: the candidate's name)."""

    pull_request: PullRequest | None = None
    """Open a pull request into `branch` instead of pushing to it (the Secret's `token` must also be allowed to
    open pull requests). Without it the commit is pushed to `branch` directly."""


class Resources(Model):
    """Compute for the eval pod."""

    gpu_resource_name: GpuResourceName = "nvidia.com/gpu"
    """Extended resource name of the GPUs (the pod requests engine.tensorParallel of them; none for hf)."""

    cpu: Quantity = "8"
    """CPU request and limit."""

    memory: Quantity = "64Gi"
    """Memory request and limit."""

    shared_memory: Quantity = "8Gi"
    """Size of /dev/shm."""

    ephemeral_storage: Quantity | None = None
    """Scratch space per pod (downloaded models, merged bases, checkpoints before upload): the pod requests this
    much ephemeral-storage (request and limit) and its /scratch volume is capped at it. Default: no request
    (the node's free disk)."""

    image: ImageRef | None = None
    """Eval image override."""

    gpus: Annotated[int, Field(ge=0, le=16)] | None = None
    """GPUs to request; default engine.tensorParallel for vllm, 0 for hf."""


class Output(Model):
    """Where the report goes."""

    uri: Uri | None = None
    """Artifact directory. Default: <artifact root>/<namespace>/<plural>/<name>/."""


class Bootstrap(Model):
    """Paired bootstrap for confidence intervals."""

    samples: Annotated[int, Field(ge=100, le=100_000)] = 1000
    """Resamples."""

    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    """Confidence level of the intervals."""

    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    """Resampling seed."""


class EvalRunSpec(Model):
    """Desired state of an EvalRun."""

    cel_rules: ClassVar = [
        cel(
            "self.candidates.filter(c, c.baseline).size() == 1",
            "exactly one candidate must have baseline: true",
            field_path=".candidates",
        ),
        cel(
            "self.candidates.all(c, self.candidates.exists_one(d, d.name == c.name))",
            "candidate names must be unique",
            field_path=".candidates",
        ),
        cel(
            "self.metrics.all(m, self.metrics.exists_one(n, n.name == m.name))",
            "metric names must be unique",
            field_path=".metrics",
        ),
        cel(
            "self.gates.all(g, !has(g.candidate) || self.candidates.exists(c, c.name == g.candidate))",
            "every gate's candidate must be one of the candidates",
            field_path=".gates",
        ),
        cel(
            "self.gates.all(g, self.metrics.exists(m, m.name == g.metric"
            " || (m.type == 'repetition' && g.metric in [m.name + '.ngram_rate', m.name + '.longest_span',"
            " m.name + '.no_eos_rate', m.name + '.repeater_rate'])"
            " || (m.type == 'length' && g.metric in [m.name + '.tokens', m.name + '.chars'])))",
            "every gate's metric must name one of the metrics, or a sub-value of a repetition metric "
            "(.ngram_rate, .longest_span, .no_eos_rate, .repeater_rate) or a length metric (.tokens, .chars)",
            field_path=".gates",
        ),
        cel(
            "!has(self.promotion) || size(self.gates) > 0",
            "promotion needs at least one gate",
            field_path=".promotion",
        ),
        cel(
            "!has(self.promotion) || !has(self.promotion.candidate) || "
            "self.candidates.exists(c, c.name == self.promotion.candidate && !c.baseline)",
            "promotion.candidate must be a candidate other than the baseline",
            field_path=".promotion.candidate",
        ),
        cel(
            "!has(self.promotion) || has(self.promotion.candidate) || size(self.candidates) == 2",
            "with more than one non-baseline candidate, promotion.candidate says which to promote",
            field_path=".promotion",
        ),
    ]

    test_set: TestSet
    """The prompts and reference answers."""

    candidates: Annotated[list[Candidate], Field(min_length=2, max_length=16)]
    """Models to compare; one is the baseline."""

    engine: Engine = Engine()
    """Inference engine and decoding."""

    metrics: Annotated[list[Metric], Field(min_length=1, max_length=32)] = [
        Metric(name="exact_match", type="exact_match"),
        Metric(name="normalized_match", type="normalized_match"),
        Metric(name="repetition", type="repetition"),
        Metric(name="length", type="length"),
    ]
    """What to measure."""

    stratify_by: FieldName | None = "subtype"
    """Metadata field for per-stratum scores (e.g. per-subtype accuracy); ignored when rows lack it."""

    bootstrap: Bootstrap = Bootstrap()
    """Confidence intervals."""

    gates: Annotated[list[Gate], Field(max_length=32)] = []
    """Conditions for promotion; all must pass."""

    promotion: Promotion | None = None
    """Record a passing adapter in a GitOps repository."""

    resources: Resources = Resources()
    """Compute for the eval pod."""

    scheduling: Scheduling = Scheduling()
    """Node selection for the eval pod."""

    pod: PodOptions = PodOptions()
    """Environment (values, Secrets, ConfigMaps), extra volumes and mounts, and a shared model cache for the pods."""

    output: Output = Output()
    """Where the report goes."""

    storage: Storage = Storage()
    """Credentials for S3."""

    queue_name: ResourceName | None = None
    """Kueue LocalQueue for the eval Job."""

    active_deadline_seconds: Annotated[int, Field(ge=60, le=30 * 86400)] | None = None
    """Wall-clock limit of the eval Job."""


class MetricValue(Model):
    """A metric's point estimate, interval, and delta against the baseline."""

    value: float | None = None
    """Point estimate."""

    ci_low: float | None = None
    """Lower end of the confidence interval."""

    ci_high: float | None = None
    """Upper end of the confidence interval."""

    delta: float | None = None
    """Candidate minus baseline."""

    delta_ci_low: float | None = None
    """Lower end of the delta's interval."""

    delta_ci_high: float | None = None
    """Upper end of the delta's interval."""


class CandidateResult(Model):
    """One candidate's metrics."""

    candidate: Annotated[str, Field(max_length=64)]
    """Candidate name."""

    baseline: bool = False
    """Whether it is the baseline."""

    metrics: Annotated[dict[str, MetricValue], Field(max_length=128)] | None = None
    """Metric name → value with interval."""


class GateResult(Model):
    """How a gate came out."""

    name: Annotated[str, Field(max_length=128)]
    """Gate name."""

    metric: Annotated[str, Field(max_length=128)]
    """Metric tested."""

    candidate: Annotated[str, Field(max_length=64)]
    """Candidate tested."""

    value: float | None = None
    """Value compared (a delta when relative to the baseline)."""

    comparator: Annotated[str, Field(max_length=2)]
    """Comparator."""

    threshold: float
    """Threshold."""

    passed: bool
    """Whether the gate holds."""


class PromotionStatus(Model):
    """Where the promotion landed."""

    repository: Annotated[str, Field(max_length=512)] | None = None
    """Repository URL."""

    branch: Annotated[str, Field(max_length=128)] | None = None
    """Branch."""

    path: Annotated[str, Field(max_length=512)] | None = None
    """Record path."""

    commit: Annotated[str, Field(max_length=64)] | None = None
    """Commit SHA."""

    pull_request: Annotated[str, Field(max_length=512)] | None = None
    """URL of the pull request that merges the commit (on `branch`) into `baseBranch` (spec.promotion.pullRequest)."""

    base_branch: Annotated[str, Field(max_length=128)] | None = None
    """The branch the pull request merges into."""


STATUS_GATES_LIMIT = 64


class EvalRunStatus(StatusBase):
    """Observed state of an EvalRun."""

    results: Annotated[list[CandidateResult], Field(max_length=16)] | None = None
    """Per-candidate metrics with confidence intervals."""

    gates: Annotated[list[GateResult], Field(max_length=STATUS_GATES_LIMIT)] | None = None
    """Gate outcomes (failing first; gatesPassed counts those that did not fit)."""

    gates_passed: Annotated[str, Field(max_length=16)] | None = None
    """Passed gates out of all, e.g. 3/3."""

    report: Annotated[str, Field(max_length=1024)] | None = None
    """URI of report.html."""

    artifacts: Annotated[str, Field(max_length=1024)] | None = None
    """URI of the report directory (predictions, CSV, XLSX, plots, summary)."""

    promotion: PromotionStatus | None = None
    """The promotion commit."""


class EvalRun(Resource):
    """Replays a test set through candidate models, scores them against a baseline, gates, promotes."""

    kind_name: ClassVar = "EvalRun"
    plural: ClassVar = "evalruns"
    singular: ClassVar = "evalrun"
    short_names: ClassVar = ["evr"]
    description: ClassVar = __doc__
    printer_columns: ClassVar = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Gates", "type": "string", "jsonPath": ".status.gatesPassed"},
        {"name": "Promoted", "type": "string", "jsonPath": ".status.promotion.commit", "priority": 1},
        {"name": "Report", "type": "string", "jsonPath": ".status.report", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    kind: Literal["EvalRun"] = "EvalRun"
    """EvalRun."""

    metadata: ObjectMeta
    """Standard object metadata."""

    spec: EvalRunSpec
    """What to evaluate."""

    status: EvalRunStatus | None = None
    """Results."""


EvalRunSpec.cel_rules = [*EvalRunSpec.cel_rules, *immutable_fields(EvalRunSpec)]
