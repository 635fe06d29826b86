"""PreferenceDataset: validate, convert, split and fingerprint SFT or preference data into S3."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from kubetune_operator.api.resource import (
    FieldName,
    Model,
    ObjectMeta,
    Quantity,
    Resource,
    Scheduling,
    SourceUri,
    StatusBase,
    Storage,
    Uri,
    cel,
    immutable_fields,
)

DataFormat = Literal[
    "auto",
    "trl",
    "llamafactory",
    "llamafactory-v1",
    "sharegpt",
    "alpaca",
    "cvalues",
    "chat-sft",
    "defects-raw",
    "replay",
]
ColumnValue = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]


class LlamaFactoryColumns(Model):
    """LLaMA-Factory's `columns` map: which input field holds each part of a sample."""

    prompt: ColumnValue | None = None
    """Field with the instruction (alpaca)."""

    query: ColumnValue | None = None
    """Field with the input appended to the instruction (alpaca)."""

    response: ColumnValue | None = None
    """Field with the answer (alpaca SFT)."""

    history: ColumnValue | None = None
    """Field with earlier [instruction, answer] turns (alpaca)."""

    messages: ColumnValue | None = None
    """Field with the message list (sharegpt)."""

    system: ColumnValue | None = None
    """Field with the system prompt."""

    tools: ColumnValue | None = None
    """Field with the tool definitions (JSON text or a list) the conversation may call (kind sft)."""

    chosen: ColumnValue | None = None
    """Field with the preferred answer (ranking data)."""

    rejected: ColumnValue | None = None
    """Field with the dispreferred answer (ranking data)."""

    kto_tag: ColumnValue | None = None
    """Field with each answer's boolean label, true for desirable (kind kto; default label)."""


class LlamaFactoryTags(Model):
    """LLaMA-Factory's `tags` map for sharegpt messages."""

    cel_rules: ClassVar = [
        cel(
            "has(self.roleTag) && has(self.contentTag) && has(self.userTag) && has(self.assistantTag)",
            "a tags map sets roleTag, contentTag, userTag and assistantTag: LLaMA-Factory unsets every tag "
            "the map leaves out",
        )
    ]

    role_tag: ColumnValue | None = None
    """Key holding a message's role (default `from`)."""

    content_tag: ColumnValue | None = None
    """Key holding a message's text (default `value`)."""

    user_tag: ColumnValue | None = None
    """Role value of user turns (default `human`)."""

    assistant_tag: ColumnValue | None = None
    """Role value of assistant turns (default `gpt`)."""

    system_tag: ColumnValue | None = None
    """Role value of system turns (default `system`)."""

    observation_tag: ColumnValue | None = None
    """Role value of tool-result turns (default `observation`)."""

    function_tag: ColumnValue | None = None
    """Role value of tool-call turns (default `function_call`)."""


class LlamaFactory(Model):
    """Column mapping for LLaMA-Factory data: a dataset_info.json entry, or the same map inline."""

    cel_rules: ClassVar = [
        cel(
            "has(self.datasetInfo) != has(self.columns)",
            "set either datasetInfo (with dataset) or an inline columns map",
        ),
        cel("!has(self.datasetInfo) || has(self.dataset)", "datasetInfo needs dataset: the entry to use"),
        cel(
            "has(self.columns) || !(has(self.formatting) || has(self.ranking) || has(self.tags))",
            "formatting, ranking and tags go with an inline columns map; a datasetInfo entry holds its own",
        ),
    ]

    dataset_info: Uri | None = None
    """URI of a dataset_info.json. Its entry's file_name is resolved next to it unless sources are given."""

    # No leading dash: the name is an argument of `data prepare --dataset`, not an option.
    dataset: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")] | None = None
    """Name of the entry in dataset_info.json."""

    formatting: Literal["alpaca", "sharegpt"] | None = None
    """Inline map only: alpaca or sharegpt layout (default alpaca)."""

    ranking: bool | None = None
    """Inline map only: the data holds chosen/rejected pairs (default true for kind preference)."""

    columns: LlamaFactoryColumns | None = None
    """Inline column map, as in dataset_info.json."""

    tags: LlamaFactoryTags | None = None
    """Inline sharegpt tag map, as in dataset_info.json."""


class Split(Model):
    """How rows are divided into train and test. Deterministic for a seed."""

    test_fraction: Annotated[float, Field(ge=0.0, le=0.9)] = 0.1
    """Fraction of rows in the test split."""

    stratify_by: FieldName | None = None
    """Metadata field to stratify by (e.g. subtype): every stratum with at least 2 rows appears in test."""

    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 42
    """Seed of the split."""


class Limits(Model):
    """Bounds on what is kept."""

    max_rows: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None
    """Keep at most this many rows (after validation), in input order."""

    max_length: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    """Drop rows whose prompt plus answer is longer than this many characters (reason too_long)."""


class BadRows(Model):
    """What happens to rows that fail validation. Nothing is dropped without being counted."""

    policy: Literal["drop", "fail"] = "drop"
    """drop: count bad rows by reason and go on; fail: stop at the first bad row, naming file and line."""

    max_drop_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    """With drop: fail when more than this fraction of rows is bad."""


class DataSource(Model):
    """Where input rows come from."""

    uri: SourceUri
    """s3:// or file:// URI of a file, a directory (every supported file in it) or a glob.
    JSON, JSONL, Parquet and CSV, optionally gzip-compressed."""


class Output(Model):
    """Where results go."""

    uri: Uri | None = None
    """Artifact directory. Default: <artifact root>/<namespace>/<plural>/<name>/."""


class Resources(Model):
    """Compute for the pod."""

    cpu: Quantity = "2"
    """CPU request and limit."""

    memory: Quantity = "8Gi"
    """Memory request and limit."""


class PreferenceDatasetSpec(Model):
    """Desired state of a PreferenceDataset."""

    cel_rules: ClassVar = [
        cel(
            "!(self.format == 'llamafactory') || has(self.llamafactory)",
            "format llamafactory needs the llamafactory column mapping (datasetInfo or columns)",
            field_path=".llamafactory",
        ),
        cel(
            "!has(self.llamafactory) || self.format in ['auto', 'llamafactory', 'alpaca', 'sharegpt']",
            "llamafactory mapping applies only to formats auto, llamafactory, alpaca and sharegpt",
            field_path=".llamafactory",
        ),
        cel(
            "self.kind == 'sft' || !(self.format in ['chat-sft', 'defects-raw', 'replay'])",
            "formats chat-sft, defects-raw and replay hold SFT data: set kind sft",
            field_path=".kind",
        ),
        cel(
            "self.kind == 'preference' || self.format != 'cvalues'",
            "format cvalues holds preference pairs: set kind preference",
            field_path=".kind",
        ),
        cel(
            "!has(self.llamafactory) || !has(self.llamafactory.ranking) || "
            "self.llamafactory.ranking == (self.kind == 'preference')",
            "llamafactory.ranking must be true for kind preference and false for kinds sft and kto",
            field_path=".llamafactory.ranking",
        ),
        cel(
            "self.kind != 'preference' || !has(self.llamafactory) || !has(self.llamafactory.columns) || "
            "(has(self.llamafactory.columns.chosen) && has(self.llamafactory.columns.rejected))",
            "preference pairs need llamafactory.columns.chosen and llamafactory.columns.rejected",
            field_path=".llamafactory.columns",
        ),
        cel(
            "!has(self.llamafactory) || !has(self.llamafactory.formatting) || "
            "!(self.format in ['alpaca', 'sharegpt']) || self.format == self.llamafactory.formatting",
            "llamafactory.formatting must agree with format",
            field_path=".llamafactory.formatting",
        ),
        cel(
            "self.kind != 'kto' || !(self.format in ['cvalues', 'chat-sft', 'defects-raw', 'replay', 'llamafactory-v1'])",
            "kind kto reads formats auto, trl, llamafactory, sharegpt and alpaca",
            field_path=".format",
        ),
        cel(
            "!has(self.llamafactory) || !has(self.llamafactory.columns) || !has(self.llamafactory.columns.tools)"
            " || self.kind == 'sft'",
            "llamafactory.columns.tools: tool calling is read for kind sft only",
            field_path=".llamafactory.columns.tools",
        ),
        cel(
            "!has(self.llamafactory) || !has(self.llamafactory.columns) || !has(self.llamafactory.columns.ktoTag)"
            " || self.kind == 'kto'",
            "llamafactory.columns.ktoTag labels KTO rows: set kind kto",
            field_path=".llamafactory.columns.ktoTag",
        ),
        cel(
            "size(self.sources) > 0 || (has(self.llamafactory) && has(self.llamafactory.datasetInfo))",
            "give at least one source, or a llamafactory.datasetInfo whose entry names the file",
            field_path=".sources",
        ),
    ]

    kind: Literal["preference", "sft", "kto"]
    """What the rows are: preference pairs (prompt, chosen, rejected) for dpo, orpo and simpo; SFT
    conversations (with tool calls where the data has them); or kto rows, one answer each with a
    desirable/undesirable label."""

    sources: Annotated[list[DataSource], Field(max_length=64)] = []
    """Input files, directories or globs."""

    format: DataFormat = "auto"
    """Input format. auto detects it from the first rows and reports the evidence in status. replay reads
    LLaMA-Factory test.json replay sets (text, standard_answer) as SFT rows; llamafactory-v1 reads
    LLaMA-Factory v1 samples (content parts, loss_weight, chosen_messages/rejected_messages)."""

    llamafactory: LlamaFactory | None = None
    """LLaMA-Factory column mapping (required for format llamafactory)."""

    split: Split = Split()
    """Train/test split."""

    dedupe: bool = True
    """Drop exact duplicate rows (counted as duplicate); no duplicate ever crosses train and test."""

    limits: Limits = Limits()
    """Row and length limits."""

    bad_rows: BadRows = BadRows()
    """Policy for rows that fail validation."""

    output: Output = Output()
    """Where the prepared dataset goes."""

    storage: Storage = Storage()
    """Credentials for S3."""

    resources: Resources = Resources()
    """Compute for the preparation pod."""

    scheduling: Scheduling = Scheduling()
    """Node selection for the preparation pod."""

    active_deadline_seconds: Annotated[int, Field(ge=60, le=7 * 86400)] = 6 * 3600
    """Wall-clock limit of the preparation Job."""


class StratumCounts(Model):
    """Rows of one stratum per split."""

    train: int = 0
    """Rows in train."""

    test: int = 0
    """Rows in test."""


class SplitCounts(Model):
    """Rows per split."""

    train: int = 0
    """Rows in train."""

    test: int = 0
    """Rows in test."""


class LengthStats(Model):
    """Character lengths of the kept rows."""

    min: int | None = None
    """Shortest."""

    mean: float | None = None
    """Mean."""

    p50: float | None = None
    """Median."""

    p95: float | None = None
    """95th percentile."""

    max: int | None = None
    """Longest."""


class DatasetArtifacts(Model):
    """Where the prepared dataset is."""

    uri: Annotated[str, Field(max_length=1024)] | None = None
    """Directory with train.jsonl, test.jsonl and manifest.json."""

    manifest: Annotated[str, Field(max_length=1024)] | None = None
    """URI of manifest.json (written last)."""


# Bounds of status.warnings; the pod's termination summary sends fewer and shorter ones.
STATUS_WARNINGS_LIMIT = 8
STATUS_WARNING_LENGTH = 1024
STATUS_STRATA_LIMIT = 256


class PreferenceDatasetStatus(StatusBase):
    """Observed state of a PreferenceDataset."""

    format: Annotated[str, Field(max_length=64)] | None = None
    """The input format read (detected, for format auto)."""

    format_evidence: Annotated[str, Field(max_length=1024)] | None = None
    """Why auto-detection chose that format."""

    counts: SplitCounts | None = None
    """Rows per split."""

    dropped: Annotated[dict[str, int], Field(max_length=64)] | None = None
    """Dropped rows by reason (broken_json, missing_field, empty, chosen_equals_rejected, duplicate, too_long, ...)."""

    strata: Annotated[dict[str, StratumCounts], Field(max_length=STATUS_STRATA_LIMIT)] | None = None
    """Rows per stratum and split, for stratified splits."""

    prompt_length: LengthStats | None = None
    """Prompt lengths in characters."""

    answer_length: LengthStats | None = None
    """Answer lengths in characters."""

    fingerprint: Annotated[str, Field(max_length=80)] | None = None
    """sha256 fingerprint of the prepared data; FineTuneJobs record it."""

    warnings: (
        Annotated[
            list[Annotated[str, Field(max_length=STATUS_WARNING_LENGTH)]], Field(max_length=STATUS_WARNINGS_LIMIT)
        ]
        | None
    ) = None
    """What did not go as asked, e.g. a stratum the split left without train rows; the first few, clipped."""

    artifacts: DatasetArtifacts | None = None
    """Where the prepared dataset is."""


class PreferenceDataset(Resource):
    """Validates, converts, splits and fingerprints SFT or preference data into the artifact store."""

    kind_name: ClassVar = "PreferenceDataset"
    plural: ClassVar = "preferencedatasets"
    singular: ClassVar = "preferencedataset"
    short_names: ClassVar = ["pds"]
    description: ClassVar = __doc__
    printer_columns: ClassVar = [
        {"name": "Kind", "type": "string", "jsonPath": ".spec.kind"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Train", "type": "integer", "jsonPath": ".status.counts.train"},
        {"name": "Test", "type": "integer", "jsonPath": ".status.counts.test"},
        {"name": "Fingerprint", "type": "string", "jsonPath": ".status.fingerprint", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    kind: Literal["PreferenceDataset"] = "PreferenceDataset"
    """PreferenceDataset."""

    metadata: ObjectMeta
    """Standard object metadata."""

    spec: PreferenceDatasetSpec
    """What to prepare."""

    status: PreferenceDatasetStatus | None = None
    """What was prepared."""


# A prepared dataset is an input of running jobs: its definition may not change under them, and the
# operator applies no change to a Job it has started.
PreferenceDatasetSpec.cel_rules = [*PreferenceDatasetSpec.cel_rules, *immutable_fields(PreferenceDatasetSpec)]
